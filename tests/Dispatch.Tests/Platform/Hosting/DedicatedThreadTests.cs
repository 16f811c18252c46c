using Dispatch.Platform.Hosting;
using Xunit;

namespace Dispatch.Tests.Platform.Hosting;

public sealed class DedicatedThreadTests
{
    [Fact]
    public async Task The_loop_runs_on_a_named_background_thread_of_its_own_and_the_task_ends_with_it()
    {
        string? name = null;
        var background = false;
        var pooled = true;
        var caller = Environment.CurrentManagedThreadId;
        var loopThread = 0;

        await DedicatedThread.Run("test loop", () =>
        {
            name = Thread.CurrentThread.Name;
            background = Thread.CurrentThread.IsBackground;
            pooled = Thread.CurrentThread.IsThreadPoolThread;
            loopThread = Environment.CurrentManagedThreadId;
        });

        Assert.Equal("test loop", name);
        Assert.True(background);
        Assert.False(pooled);
        Assert.NotEqual(caller, loopThread);
    }

    [Fact]
    public async Task A_loop_that_throws_faults_the_task_unless_the_exception_is_a_normal_end()
    {
        var failed = DedicatedThread.Run("test loop", () => throw new InvalidOperationException("broken"));
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => failed);
        Assert.Equal("broken", e.Message);

        var closed = DedicatedThread.Run("test loop", () => throw new ObjectDisposedException("listener"), e => e is ObjectDisposedException);
        await closed;
        Assert.True(closed.IsCompletedSuccessfully);

        var other = DedicatedThread.Run("test loop", () => throw new TimeoutException(), e => e is ObjectDisposedException);
        await Assert.ThrowsAsync<TimeoutException>(() => other);
    }

    [Fact]
    public async Task The_task_does_not_end_before_the_loop_does()
    {
        using var release = new ManualResetEventSlim();
        var task = DedicatedThread.Run("test loop", release.Wait);

        Assert.False(task.IsCompleted);
        release.Set();
        await task;
    }
}
