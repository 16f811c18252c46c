using Serilog;
using Serilog.Core;
using Serilog.Events;

namespace Dispatch.Master.Tests;

/// <summary>A task the master does not wait for still has its failure logged.</summary>
public class FireAndForgetTests
{
    [Fact]
    public void A_failed_task_is_logged_as_an_error_naming_it_and_a_finished_one_is_not()
    {
        var sink = new CollectingSink();
        var log = new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.Sink(sink).CreateLogger();
        var failing = new TaskCompletionSource();
        var finishing = new TaskCompletionSource();

        FireAndForget.Observe(failing.Task, log, "Start of a worker for pool a");
        FireAndForget.Observe(finishing.Task, log, "Drain of dispatcher 7");
        FireAndForget.Observe(Task.CompletedTask, log, "Nothing");
        finishing.SetResult();
        failing.SetException(new InvalidOperationException("the snapshot did not serialize"));

        // The continuation runs on the thread that failed the task; waited for all the same.
        Assert.True(SpinWait.SpinUntil(() => sink.Count > 0, TimeSpan.FromSeconds(10)), "the failure was not logged");
        var e = Assert.Single(sink.Events);
        Assert.Equal(LogEventLevel.Error, e.Level);
        Assert.Equal("\"Start of a worker for pool a\" failed: \"the snapshot did not serialize\"", e.RenderMessage());
        Assert.IsType<InvalidOperationException>(e.Exception);
    }
}
