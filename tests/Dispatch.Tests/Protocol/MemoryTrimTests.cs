using Dispatch.Protocol.Hosting;
using Serilog;

namespace Dispatch.Tests.Protocol;

/// <summary>When <see cref="MemoryTrim"/> collects: once after a surge of connections has ended, never in steady load.</summary>
public sealed class MemoryTrimTests
{
    [Fact]
    public void Trims_once_when_a_surge_has_fallen_back_and_not_in_steady_load()
    {
        var open = 0;
        using var log = new LoggerConfiguration().CreateLogger();
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, log);

        Assert.False(trim.Check());
        open = MemoryTrim.MinimumSurge - 1;            // not a surge
        Assert.False(trim.Check());
        open = 12;
        Assert.False(trim.Check());

        open = 5000;                                   // a flood
        Assert.False(trim.Check());
        open = 2000;                                   // still more than a quarter of it
        Assert.False(trim.Check());
        open = 1200;                                   // within a quarter of the surge over the level it started from
        Assert.True(trim.Check());
        Assert.Equal(1, trim.Trims);
        Assert.False(trim.Check());                    // once: the level is taken again from here
        open = 40;
        Assert.False(trim.Check());
        Assert.Equal(1, trim.Trims);
    }

    [Fact]
    public void A_surge_already_under_way_at_the_first_look_counts_from_no_connection()
    {
        var open = 5000;
        using var log = new LoggerConfiguration().CreateLogger();
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, log);
        Assert.False(trim.Check());
        open = 3;
        Assert.True(trim.Check());
    }

    [Fact]
    public void A_surge_between_two_looks_is_seen_through_the_peak()
    {
        var open = 0;
        var peak = 0;
        using var log = new LoggerConfiguration().CreateLogger();
        using var trim = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, log, () => peak);
        Assert.False(trim.Check());

        // 5000 connections came and went between two looks: only the peak saw them.
        peak = 5000;
        open = 2;
        Assert.True(trim.Check());

        // Without the peak, the same looks see nothing to trim.
        using var blind = new MemoryTrim(() => open, Timeout.InfiniteTimeSpan, log);
        Assert.False(blind.Check());
        Assert.False(blind.Check());
    }
}
