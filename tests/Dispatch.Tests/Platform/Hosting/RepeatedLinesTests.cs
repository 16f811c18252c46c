using Dispatch.Platform.Hosting;
using Dispatch.TlsDispatcher.Tests;
using Serilog;

namespace Dispatch.Tests.Platform.Hosting;

public class RepeatedLinesTests
{
    [Fact]
    public void The_first_line_then_one_per_interval_with_the_count_held_back()
    {
        var now = 1_000L;
        var lines = new RepeatedLines(TimeSpan.FromSeconds(60), () => now);

        Assert.True(lines.Allow("a|full", out var notLogged));
        Assert.Equal(0, notLogged);
        for (var i = 0; i < 59; i++)
        {
            now += 1_000;
            Assert.False(lines.Allow("a|full", out _));
        }

        // Another key, or the same pool for another reason, is a line of its own.
        Assert.True(lines.Allow("b|full", out _));
        Assert.True(lines.Allow("a|backoff", out _));

        now += 1_000;
        Assert.True(lines.Allow("a|full", out notLogged));
        Assert.Equal(59, notLogged);
        Assert.False(lines.Allow("a|full", out _));

        // Quiet for an interval: written again at once, with what was held back before the quiet spell.
        now += 120_000;
        Assert.True(lines.Allow("a|full", out notLogged));
        Assert.Equal(1, notLogged);
    }

    [Fact]
    public void A_warning_is_written_once_then_with_the_count_held_back()
    {
        var now = 0L;
        var lines = new RepeatedLines(TimeSpan.FromSeconds(60), () => now);
        var sink = new CollectingSink();
        var log = new LoggerConfiguration().WriteTo.Sink(sink).CreateLogger();
        for (var i = 0; i < 3; i++)
            lines.Warning(log, "b|full", "Refused a worker for pool {Pool}: {Reason}", "b", "full");
        now += 60_000;
        lines.Warning(log, "b|full", "Refused a worker for pool {Pool}: {Reason}", "b", "full");

        Assert.Equal(
            ["Refused a worker for pool \"b\": \"full\"", "Refused a worker for pool \"b\": \"full\" (also 2 times since the last such line)"],
            sink.Lines());
    }

    [Fact]
    public void Keys_seen_no_more_are_dropped_as_new_ones_come()
    {
        var now = 0L;
        var lines = new RepeatedLines(TimeSpan.FromSeconds(1), () => now);
        for (var i = 0; i < 256; i++)
            Assert.True(lines.Allow("pool" + i, out _));
        Assert.Equal(256, lines.Count);

        // Within the interval every key is still a state that lasts: kept.
        Assert.True(lines.Allow("pool-late", out _));
        Assert.Equal(257, lines.Count);

        now += 1_000;
        Assert.True(lines.Allow("pool-new", out _));
        Assert.Equal(1, lines.Count);
    }
}
