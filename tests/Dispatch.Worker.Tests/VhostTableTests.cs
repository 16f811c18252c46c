using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;

namespace Dispatch.Worker.Tests;

public sealed class VhostTableTests
{
    private static readonly Serilog.ILogger NoLog = Serilog.Core.Logger.None;

    private static VhostTable Table(params Dispatch.Wire.Payloads.WorkerVhost[] settings) =>
        new(settings.Select(s => new Vhost(s, new ConfinedFileProvider("/nonexistent"), NoLog)));

    private static string? Find(VhostTable table, string authority) =>
        VhostTable.TryGetHostName(authority, out var host) && table.TryFind(host, out var vhost) ? vhost.Name : null;

    [Theory]
    [InlineData("a.localhost", "a.localhost")]
    [InlineData("A.LocalHost", "a.localhost")]
    [InlineData("a.localhost:8080", "a.localhost")]
    [InlineData("a.localhost.", "a.localhost")]
    [InlineData("A.LOCALHOST.:443", "a.localhost")]
    [InlineData("www.a.localhost", "a.localhost")]
    [InlineData("x.c.localhost", "wild")]
    [InlineData("X.C.LOCALHOST.:80", "wild")]
    [InlineData("c.localhost", null)]
    [InlineData("a.b.c.localhost", null)]
    [InlineData(".c.localhost", null)]
    [InlineData("b.localhost", null)]
    [InlineData("a.localhost..", null)]
    [InlineData("[::1]:80", null)]
    [InlineData("127.0.0.1", null)]
    [InlineData("exact.c.localhost", "exact")]
    public void Matches_names_aliases_and_one_label_wildcards(string authority, string? expected)
    {
        var table = Table(
            Harness.Vhost("a.localhost", "/r", aliases: ["www.a.localhost"]),
            Harness.Vhost("wild", "/r", aliases: ["*.c.localhost"]),
            Harness.Vhost("exact", "/r", aliases: ["EXACT.c.localhost."]));
        Assert.Equal(expected, Find(table, authority));
    }

    [Theory]
    [InlineData("")]
    [InlineData(":80")]
    [InlineData("   ")]
    [InlineData(".")]
    public void Empty_hosts_are_rejected(string authority) =>
        Assert.False(VhostTable.TryGetHostName(authority, out _));

    [Fact]
    public void Duplicate_names_are_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => Table(
            Harness.Vhost("a.localhost", "/r"),
            Harness.Vhost("b.localhost", "/r", aliases: ["A.localhost."])));
        Assert.Contains("a.localhost", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData("*")]
    [InlineData("a.*.localhost")]
    [InlineData("**.localhost")]
    [InlineData("a..localhost")]
    [InlineData("a/b")]
    [InlineData("a:80")]
    public void Invalid_names_are_refused(string name) =>
        Assert.Throws<ArgumentException>(() => VhostTable.NormalizeConfiguredName(name));

    /// <summary>
    /// What a vhost served, counted as each request ends (<see cref="Vhost.Traffic"/>, the metrics per vhost): by a real
    /// server for requests curl makes (statuses, body bytes as curl received them, a HEAD's none), by class and bucket.
    /// </summary>
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
