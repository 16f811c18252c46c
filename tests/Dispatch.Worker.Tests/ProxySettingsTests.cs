using System.Text.Json;
using Dispatch.Wire.Payloads;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;

namespace Dispatch.Worker.Tests;

/// <summary>
/// Proxy settings reach a worker checked: an upstream that is not a Unix socket or loopback TCP cannot be held by its
/// settings (the pool payload is refused), and prefixes are checked at start (sane, no overlap with CGI).
/// </summary>
public sealed class ProxySettingsTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData("http://10.0.0.1:8080")]
    [InlineData("http://192.168.1.1:80")]
    [InlineData("http://localhost:8080")]
    [InlineData("http://example.com:8080")]
    [InlineData("http://[::2]:8080")]
    [InlineData("http://[0:0:0:0:0:0:0:1]:8080")]
    [InlineData("http://0.0.0.0:8080")]
    [InlineData("https://127.0.0.1:8443")]
    [InlineData("http://127.0.0.1")]
    [InlineData("http://127.0.0.1:")]
    [InlineData("http://127.0.0.1:0")]
    [InlineData("http://127.0.0.1:65536")]
    [InlineData("http://127.0.0.1:+80")]
    [InlineData("http://127.1:8080")]
    [InlineData("http://127.0.0.01:8080")]
    [InlineData("http://0x7f.0.0.1:8080")]
    [InlineData("http://[::ffff:127.0.0.1]:8080")]
    [InlineData("http://[::1]")]
    [InlineData("http://127.0.0.1:08080")]
    [InlineData("http://127.0.0.1:8080/base/")]
    [InlineData("http://127.0.0.1:8080?x")]
    [InlineData("http://user@127.0.0.1:8080")]
    [InlineData("http://127.0.0.1:8080@10.0.0.1:80")]
    [InlineData("127.0.0.1:8080")]
    [InlineData("tcp://127.0.0.1:8080")]
    [InlineData("unix:relative/app.sock")]
    [InlineData("unix:@abstract")]
    [InlineData("unix:")]
    [InlineData("unix:/srv/a/run/")]
    [InlineData("unix:/srv/a/../b/app.sock")]
    [InlineData("https://[::1]:8443")]
    [InlineData("")]
    public void Anything_but_a_unix_socket_or_loopback_tcp_is_refused_in_the_pool_payload_saying_where(string upstream)
    {
        var e = Assert.Throws<JsonException>(() => SnapshotJson.ParsePool(PayloadWithUpstream(upstream)));
        Assert.Contains(ProxyUpstream.AcceptedForms, e.Message, StringComparison.Ordinal);
        Assert.EndsWith(".upstream", e.Path, StringComparison.Ordinal);
    }

    [Fact]
    public void A_unix_path_longer_than_sun_path_is_refused_in_the_pool_payload()
    {
        var e = Assert.Throws<JsonException>(() => SnapshotJson.ParsePool(PayloadWithUpstream("unix:/" + new string('s', 107))));
        Assert.Contains("107 bytes", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("-1")]
    [InlineData("1.5")]
    [InlineData("2147483648")]
    [InlineData("\"5s\"")]
    public void A_timeout_that_is_not_whole_milliseconds_is_refused_in_the_pool_payload(string timeout)
    {
        var json = System.Text.Encoding.UTF8.GetString(PayloadWithUpstream("unix:/srv/a.sock")).Replace("\"readTimeoutMs\":0", "\"readTimeoutMs\":" + timeout, StringComparison.Ordinal);
        var e = Assert.Throws<JsonException>(() => SnapshotJson.ParsePool(System.Text.Encoding.UTF8.GetBytes(json)));
        Assert.EndsWith(".readTimeoutMs", e.Path, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("unix:/srv/a/run/app.sock")]
    [InlineData("http://127.0.0.1:8081")]
    [InlineData("http://127.0.0.1:8081/")]
    [InlineData("HTTP://127.0.0.1:1")]
    [InlineData("http://[::1]:65535")]
    [InlineData("http://127.0.0.2:8080")]
    [InlineData("http://127.255.255.254:8080")]
    [InlineData("Unix:/srv/a/run/app.sock")]
    public async Task Unix_sockets_and_loopback_ports_are_accepted(string upstream)
    {
        var pool = SnapshotJson.ParsePool(PayloadWithUpstream(upstream));
        Assert.True(ProxyUpstream.TryParse(upstream, out var expected, out _));
        Assert.Equal(expected, pool.Vhosts[0].Proxy[0].Upstream);
        await using var server = await StartAsync([Harness.Proxy("/", upstream)]);
    }

    [Theory]
    [InlineData("")]
    [InlineData("app/")]
    [InlineData("/app/../x/")]
    [InlineData("/./")]
    [InlineData("/a%2Fb/")]
    [InlineData("/a b/")]
    [InlineData("/a?b")]
    [InlineData("/a#b")]
    [InlineData("/a\\b/")]
    [InlineData("//x/")]
    public async Task A_prefix_must_be_an_absolute_url_path(string prefix)
    {
        var e = await Assert.ThrowsAsync<ArgumentException>(() => StartAsync([Harness.Proxy(prefix, "unix:/srv/a.sock")]));
        Assert.Contains("'p.localhost'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_same_prefix_twice_is_refused()
    {
        var e = await Assert.ThrowsAsync<ArgumentException>(() => StartAsync(
            [Harness.Proxy("/app", "unix:/srv/a.sock"), Harness.Proxy("/app/", "http://127.0.0.1:8080")]));
        Assert.Contains("twice", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("/", "/cgi-bin/")]
    [InlineData("/cgi-bin/", "/cgi-bin/")]
    [InlineData("/cgi-bin/app/", "/cgi-bin/")]
    [InlineData("/cgi-bin", "/cgi-bin")]
    public async Task Proxy_and_cgi_prefixes_must_not_overlap(string proxyPrefix, string cgiPrefix)
    {
        var e = await Assert.ThrowsAsync<ArgumentException>(() => StartAsync(
            [Harness.Proxy(proxyPrefix, "unix:/srv/a.sock")],
            [new CgiRoute(cgiPrefix, _dir.MakeDirectory("cgi"))]));
        Assert.Contains("overlaps", e.Message, StringComparison.Ordinal);
        Assert.Contains("'p.localhost'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Disjoint_proxy_and_cgi_prefixes_are_accepted()
    {
        await using var server = await StartAsync(
            [Harness.Proxy("/app/", "unix:/srv/a.sock"), Harness.Proxy("/cgi-binary/", "http://127.0.0.1:9")],
            [new CgiRoute("/cgi-bin/", _dir.MakeDirectory("cgi"))]);
    }

    [Theory]
    [InlineData("/a/b?c", "/a/b?c")]
    [InlineData("http://h/a%20b?c", "/a%20b?c")]
    [InlineData("http://h:8080", "/")]
    [InlineData("http://h?q=1", "/?q=1")]
    [InlineData("HTTPS://h/x", "/x")]
    [InlineData("*", null)]
    [InlineData("h:443", null)]
    [InlineData("", null)]
    public void Targets_become_origin_form(string raw, string? expected) => Assert.Equal(expected, ProxyHandler.OriginForm(raw));

    [Fact]
    public void Timeouts_default_when_zero()
    {
        var route = Harness.Proxy("/", "unix:/a.sock");
        Assert.Equal(TimeSpan.Zero, route.ConnectTimeout);
        Assert.Equal(ProxyRoute.DefaultConnectTimeout, route.EffectiveConnectTimeout());
        Assert.Equal(ProxyRoute.DefaultReadTimeout, route.EffectiveReadTimeout());
        Assert.Equal(TimeSpan.FromSeconds(5), ProxyRoute.DefaultConnectTimeout);
        Assert.Equal(TimeSpan.FromSeconds(60), ProxyRoute.DefaultReadTimeout);
    }

    [Fact]
    public void A_mappings_own_timeouts_are_used()
    {
        var own = Harness.Proxy("/", "unix:/a.sock", TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(300));
        Assert.Equal(TimeSpan.FromSeconds(1), own.EffectiveConnectTimeout());
        Assert.Equal(TimeSpan.FromSeconds(300), own.EffectiveReadTimeout());
    }

    /// <summary>A pool payload as the master sends it, then with its one upstream's text replaced by <paramref name="upstream"/>.</summary>
    private static byte[] PayloadWithUpstream(string upstream)
    {
        var vhost = Harness.Vhost("p.localhost", "/srv/p") with { Proxy = [Harness.Proxy("/", "unix:/srv/placeholder.sock")] };
        var json = System.Text.Encoding.UTF8.GetString(SnapshotJson.Serialize(new PoolSettings("p", [vhost], false)));
        Assert.Contains("\"unix:/srv/placeholder.sock\"", json, StringComparison.Ordinal);
        return System.Text.Encoding.UTF8.GetBytes(json.Replace("\"unix:/srv/placeholder.sock\"", JsonSerializer.Serialize(upstream), StringComparison.Ordinal));
    }

    private Task<WorkerHttpServer> StartAsync(ProxyRoute[] proxy, CgiRoute[]? cgi = null) =>
        WorkerHttpServer.StartAsync(
            [Harness.Vhost("p.localhost", _dir.MakeDirectory("site")) with { Proxy = proxy, Cgi = cgi ?? [] }],
            Serilog.Core.Logger.None,
            CancellationToken.None);
}
