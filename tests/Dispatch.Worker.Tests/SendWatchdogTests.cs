using System.IO.Pipelines;
using Dispatch.Worker.Http;
using Microsoft.AspNetCore.Connections;

namespace Dispatch.Worker.Tests;

/// <summary>The send watchdog's timer runs only while a connection is watched: an idle worker is not woken by it.</summary>
public sealed class SendWatchdogTests
{
    private static DefaultConnectionContext Connection(string id)
    {
        var transport = new Pipe();
        var application = new Pipe();
        return new DefaultConnectionContext(id, new DuplexPipe(transport.Reader, application.Writer), new DuplexPipe(application.Reader, transport.Writer));
    }

    [Fact]
    public void The_timer_runs_while_a_connection_is_watched_and_stops_with_the_last()
    {
        // A send timeout of an hour: the timer (15 min period, clamped to 1 s) never fires during the test by itself.
        using var watchdog = new SendWatchdog(TimeSpan.FromHours(1), Serilog.Core.Logger.None);
        Assert.False(watchdog.Running);

        var first = watchdog.Add(Connection("1"));
        Assert.True(watchdog.Running);
        var second = watchdog.Add(Connection("2"));
        first.Dispose();
        Assert.True(watchdog.Running);
        second.Dispose();

        // The next look finds nothing to watch and stops the timer; the next connection starts it again.
        watchdog.CheckNow();
        Assert.False(watchdog.Running);
        var third = watchdog.Add(Connection("3"));
        Assert.True(watchdog.Running);
        watchdog.CheckNow();
        Assert.True(watchdog.Running);
        third.Dispose();
        watchdog.CheckNow();
        Assert.False(watchdog.Running);
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;

        public PipeWriter Output => output;
    }
}
