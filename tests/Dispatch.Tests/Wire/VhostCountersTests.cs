using Dispatch.Wire;

namespace Dispatch.Tests.Wire;

/// <summary>A vhost's live counts (<see cref="VhostCounters"/>): what the worker and the dispatcher count as each request ends.</summary>
public sealed class VhostCountersTests
{
    [Fact]
    public void Each_request_counts_in_its_status_class_its_bytes_and_its_duration_bucket()
    {
        var counters = new VhostCounters();
        var told = 0;
        counters.Changed = () => told++;
        counters.Record(200, 1000, TimeSpan.FromMilliseconds(3));
        counters.Record(204, 0, TimeSpan.FromMilliseconds(7));
        counters.Record(404, 10, TimeSpan.FromSeconds(2));
        counters.Record(503, 20, TimeSpan.FromSeconds(30));
        counters.Record(101, 0, TimeSpan.Zero);
        counters.Record(0, 999, TimeSpan.Zero); // no status class: not a request served
        var t = counters.Snapshot("a.localhost");
        Assert.Equal("a.localhost", t.Vhost);
        Assert.Equal([1, 2, 0, 1, 1], t.Requests);
        Assert.Equal(1030, t.BytesSent);
        Assert.Equal(3_000 + 7_000 + 2_000_000 + 30_000_000, t.DurationMicros);
        Assert.Equal([2, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1], t.Buckets);
        Assert.Equal(5, counters.Changes);
        Assert.Equal(5, told);
    }
}
