using Serilog;

namespace Dispatch.Master;

/// <summary>
/// A task the master starts and does not wait for (a worker's start, a metrics answer, a drain): its failure is
/// logged, never lost as an unobserved exception.
/// </summary>
internal static class FireAndForget
{
    public static void Observe(Task task, ILogger log, string what)
    {
        if (task.IsCompletedSuccessfully)
            return;
        task.ContinueWith(
            t => log.Error(t.Exception!.GetBaseException(), "{Task} failed: {Reason}", what, t.Exception!.GetBaseException().Message),
            CancellationToken.None,
            TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }
}
