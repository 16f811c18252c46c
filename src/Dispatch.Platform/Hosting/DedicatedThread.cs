namespace Dispatch.Platform.Hosting;

/// <summary>
/// A loop that runs on a thread of its own, never on the thread pool's (it sleeps in a system call: accept, poll), and
/// is awaited as a task that ends with it: the dispatcher's accept loops, the worker's channel from its dispatcher.
/// </summary>
public static class DedicatedThread
{
    /// <summary>
    /// Starts <paramref name="loop"/> on a background thread named <paramref name="name"/>. The task completes when the
    /// loop returns, or when it throws an exception <paramref name="endsNormally"/> accepts (a listener closed before the
    /// loop began); any other exception faults it. Its continuations never run on the loop's thread.
    /// </summary>
    public static Task Run(string name, Action loop, Func<Exception, bool>? endsNormally = null)
    {
        ArgumentNullException.ThrowIfNull(loop);
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                loop();
                done.TrySetResult();
            }
            catch (Exception e) when (endsNormally?.Invoke(e) == true)
            {
                done.TrySetResult();
            }
            catch (Exception e)
            {
                done.TrySetException(e);
            }
        })
        {
            IsBackground = true,
            Name = name,
        };
        thread.Start();
        return done.Task;
    }
}
