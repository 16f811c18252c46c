using Dispatch.Wire;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;

namespace Dispatch.Worker.Tests;

/// <summary>
/// What a vhost served, counted as each request ends (<see cref="VhostCounters"/>, the metrics per vhost): by a real
/// server for requests curl makes (statuses, body bytes as curl received them, a HEAD's none), by class and bucket.
/// </summary>
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

    [Fact]
    public async Task A_servers_requests_are_counted_for_their_vhost_with_the_bytes_the_client_received()
    {
        using var dir = new TempDir();
        dir.Write("a/index.html", "<h1>a</h1>");
        dir.Write("a/big.bin", new string('z', 200_000));
        dir.Write("b/index.html", "b");
        await using var harness = await Harness.StartAsync(Harness.Vhost("a.localhost", dir.Combine("a")), Harness.Vhost("b.localhost", dir.Combine("b")));
        var resolve = $"*:{harness.Port}:127.0.0.1";
        long received = 0;
        foreach (var (path, status, head) in new[] { ("/", 200, false), ("/big.bin", 200, false), ("/missing", 404, false), ("/big.bin", 200, true) })
        {
            string[] method = head ? ["-I"] : [];
            var r = await Curl.RunAsync([.. method, "-o", "/dev/null", "-w", "%{size_download}\n%{http_code}", "--resolve", resolve, $"http://a.localhost:{harness.Port}{path}"]);
            Assert.Equal(0, r.ExitCode);
            var tail = r.Output.Split('\n');
            Assert.Equal(status.ToString(System.Globalization.CultureInfo.InvariantCulture), tail[1]);
            received += long.Parse(tail[0], System.Globalization.CultureInfo.InvariantCulture);
        }

        var a = harness.Server.Vhosts.Single(v => v.Name == "a.localhost").Traffic;
        var b = harness.Server.Vhosts.Single(v => v.Name == "b.localhost").Traffic;
        // The counts are made as each request ends, after its last byte was sent: wait for the last one.
        Assert.True(SpinWait.SpinUntil(() => a.Changes == 4, TimeSpan.FromSeconds(30)), $"{a.Changes} requests counted");
        var t = a.Snapshot("a.localhost");
        Assert.Equal([0, 3, 0, 1, 0], t.Requests);
        Assert.Equal(received, t.BytesSent);
        Assert.True(received > 200_000);
        Assert.Equal(4, t.Buckets.Sum());
        Assert.Equal(0, b.Changes);
        Assert.Equal([0, 0, 0, 0, 0], b.Snapshot("b.localhost").Requests);
    }
}
