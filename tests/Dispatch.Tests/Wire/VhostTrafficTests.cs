using Dispatch.Tests.Wire.Messages;
using Dispatch.Wire;

namespace Dispatch.Tests.Wire;

/// <summary>
/// A vhost's traffic on the wire (<see cref="VhostTraffic"/>): in a worker's <see cref="WorkerTraffic"/> and in a
/// dispatcher's sealed table; what the decoders refuse (a negative count, a vhost twice, an empty name, too many
/// entries, trailing bytes), the buckets' bounds, and a channel half-closed by one side that still carries the other's.
/// </summary>
public sealed class VhostTrafficTests
{
    private static VhostTraffic Sample(string vhost, long scale = 1) =>
        new(vhost, [1 * scale, 20 * scale, 3 * scale, 4 * scale, 5 * scale], 123_456 * scale, 987_654 * scale, [.. Enumerable.Range(1, VhostTraffic.BucketCount).Select(i => i * scale)]);

    private static void AssertSame(VhostTraffic expected, VhostTraffic actual)
    {
        Assert.Equal(expected.Vhost, actual.Vhost);
        Assert.Equal(expected.Requests, actual.Requests);
        Assert.Equal(expected.BytesSent, actual.BytesSent);
        Assert.Equal(expected.DurationMicros, actual.DurationMicros);
        Assert.Equal(expected.Buckets, actual.Buckets);
    }

    [Fact]
    public void A_workers_report_and_a_dispatchers_table_come_back_as_they_were_written()
    {
        var a = Sample("a.localhost");
        var b = Sample("www.b.localhost", 1_000_000);
        var report = WireBytes.Decode<WorkerTraffic>(WireBytes.Of(new WorkerTraffic([a, b])));
        Assert.Equal(2, report.Vhosts.Length);
        AssertSame(a, report.Vhosts[0]);
        AssertSame(b, report.Vhosts[1]);

        var table = VhostTraffic.DecodeTable(VhostTraffic.EncodeTable([a, b]));
        AssertSame(a, table[0]);
        AssertSame(b, table[1]);
        Assert.Empty(VhostTraffic.DecodeTable(VhostTraffic.EncodeTable([])));

        var full = Enumerable.Range(0, WorkerTraffic.MaxEntries).Select(i => Sample($"{new string('v', 240)}{i:D3}.example")).ToArray();
        Assert.True(WireBytes.Of(new WorkerTraffic(full)).Length + IpcChannel.HeaderSize <= IpcChannel.MaxDatagram, "the most vhosts a report may carry, with the longest names, do not fit a datagram");
    }

    [Fact]
    public void Negative_counts_a_vhost_twice_an_empty_name_too_many_entries_and_trailing_bytes_are_refused()
    {
        var a = Sample("a.localhost");
        WireBytes.Refused<WorkerTraffic>(WireBytes.Of(new WorkerTraffic([a, Sample("b.localhost"), a])), "WorkerTraffic[2]: the vhost 'a.localhost' appears twice");
        WireBytes.Refused<WorkerTraffic>(WireBytes.Of(new WorkerTraffic([a with { BytesSent = -1 }])), "traffic of a.localhost: a negative bytes sent count (-1)");
        WireBytes.Refused<WorkerTraffic>(WireBytes.Of(new WorkerTraffic([a with { Requests = [0, -5, 0, 0, 0] }])), "a negative requests count (-5)");
        WireBytes.Refused<WorkerTraffic>(WireBytes.Of(new WorkerTraffic([a with { Buckets = [.. a.Buckets[..^1], long.MinValue] }])), "a negative duration bucket count");
        WireBytes.Refused<WorkerTraffic>(WireBytes.Of(new WorkerTraffic([a with { Vhost = string.Empty }])), "traffic of a vhost with an empty name");

        var tooMany = WireBytes.Of(new WorkerTraffic([a]));
        tooMany[0] = WorkerTraffic.MaxEntries + 1;
        WireBytes.Refused<WorkerTraffic>(tooMany, $"{WorkerTraffic.MaxEntries + 1} vhosts in one WorkerTraffic exceed the limit of {WorkerTraffic.MaxEntries}");

        var table = VhostTraffic.EncodeTable([a]);
        var e = Assert.Throws<WireException>(() => VhostTraffic.DecodeTable([.. table, 0]));
        Assert.Contains("1 trailing bytes", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<WireException>(() => VhostTraffic.DecodeTable(VhostTraffic.EncodeTable([a, a])));
        Assert.Contains("traffic table[1]: the vhost 'a.localhost' appears twice", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<WireException>(() => VhostTraffic.DecodeTable([0xff, 0xff, 0xff, 0x7f]));
        Assert.Contains($"exceeds the limit of {VhostTraffic.MaxTableEntries}", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<WireException>(() => VhostTraffic.DecodeTable(table.AsSpan(0, table.Length - 3)));
        Assert.Contains("truncated", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Stats_with_traffic_carry_exactly_one_descriptor_and_without_none()
    {
        var with = new DispatcherStats(3, [new StatCounter("dispatch_x_total", 1)], [], Traffic: true);
        Assert.Equal(1, DispatcherStats.DescriptorCount(with));
        Assert.True(WireBytes.Decode<DispatcherStats>(WireBytes.Of(with)).Traffic);
        Assert.Equal(0, DispatcherStats.DescriptorCount(with with { Traffic = false }));
        Assert.False(WireBytes.Decode<DispatcherStats>(WireBytes.Of(with with { Traffic = false })).Traffic);
    }

    [Theory]
    [InlineData(0, 0)]
    [InlineData(5_000, 0)]
    [InlineData(5_001, 1)]
    [InlineData(99_999, 4)]
    [InlineData(100_000, 4)]
    [InlineData(1_000_000, 7)]
    [InlineData(10_000_000, 10)]
    [InlineData(10_000_001, 11)]
    [InlineData(long.MaxValue, 11)]
    public void A_request_falls_in_the_first_bucket_whose_bound_it_is_within(long micros, int bucket) =>
        Assert.Equal(bucket, VhostTraffic.BucketOf(micros));

    [Fact]
    public void Status_codes_fall_in_their_class_and_others_in_none()
    {
        Assert.Equal(0, VhostTraffic.ClassOf(101));
        Assert.Equal(1, VhostTraffic.ClassOf(200));
        Assert.Equal(2, VhostTraffic.ClassOf(304));
        Assert.Equal(3, VhostTraffic.ClassOf(499));
        Assert.Equal(4, VhostTraffic.ClassOf(599));
        Assert.Equal(-1, VhostTraffic.ClassOf(99));
        Assert.Equal(-1, VhostTraffic.ClassOf(600));
        Assert.Equal(-1, VhostTraffic.ClassOf(0));
    }

    [Fact]
    public void Two_records_add_up_field_by_field()
    {
        var sum = Sample("a.localhost").Plus(Sample("a.localhost", 10));
        AssertSame(Sample("a.localhost", 11), sum);
        Assert.Equal(33 * 11, sum.Total);
    }

    /// <summary>
    /// The dispatcher lets a worker go by half-closing its channel (<see cref="IpcChannel.ShutdownSend"/>): the worker
    /// finds the channel's end, and its reports still arrive until it closes its own end.
    /// </summary>
    [Fact]
    public async Task A_half_closed_channel_ends_for_the_other_side_which_may_still_send()
    {
        using var dispatcher = IpcChannel.CreatePair("worker", out var workerEnd);
        using var worker = IpcChannel.FromDescriptor(workerEnd, "dispatcher");
        Assert.True(dispatcher.ShutdownSend());

        Assert.Null(await worker.ReceiveAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
        worker.Send(new WorkerTraffic([Sample("a.localhost")]));
        using (var message = await dispatcher.ReceiveAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30)))
        {
            Assert.NotNull(message);
            AssertSame(Sample("a.localhost"), Assert.Single(message.Decode<WorkerTraffic>().Vhosts));
        }

        Assert.Throws<Dispatch.Wire.Interop.SysCallException>(() => dispatcher.Send(new WorkerLoad(1, 1)));
        worker.Dispose();
        Assert.Null(await dispatcher.ReceiveAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
        dispatcher.Dispose();
        Assert.False(dispatcher.ShutdownSend());
    }
}
