using Dispatch.Platform.Hosting;

namespace Dispatch.Tests.Platform.Hosting;

/// <summary>The count <see cref="MemoryTrim"/> reads: a surge between two looks still shows as its peak.</summary>
public sealed class ConnectionGaugeTests
{
    [Fact]
    public void A_surge_between_two_looks_is_its_peak_once_then_the_count_now()
    {
        var gauge = new ConnectionGauge();
        Assert.Equal(0, gauge.TakePeak());
        for (var i = 0; i < 800; i++)
            gauge.Enter();
        for (var i = 0; i < 797; i++)
            gauge.Leave();

        Assert.Equal(3, gauge.Open);
        Assert.Equal(800, gauge.TakePeak());
        Assert.Equal(3, gauge.TakePeak());
        gauge.Enter();
        gauge.Leave();
        Assert.Equal(4, gauge.TakePeak());
    }

    [Fact]
    public void Concurrent_entries_keep_the_highest_count()
    {
        var gauge = new ConnectionGauge();
        Parallel.For(0, 10_000, _ => gauge.Enter());
        Assert.Equal(10_000, gauge.Open);
        Parallel.For(0, 10_000, _ => gauge.Leave());
        Assert.Equal(0, gauge.Open);
        Assert.Equal(10_000, gauge.TakePeak());
    }
}
