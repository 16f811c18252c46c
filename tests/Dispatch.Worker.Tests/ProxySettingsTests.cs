using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;

namespace Dispatch.Worker.Tests;

/// <summary>Proxy settings are checked at start: only Unix sockets and loopback TCP, sane prefixes, no overlap with CGI.</summary>
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
    public async Task Anything_but_a_unix_socket_or_loopback_tcp_is_refused_naming_the_vhost(string upstream)
    {
        var e = await Assert.ThrowsAsync<ArgumentException>(() => StartAsync(new ProxySettings([new ProxyMapping("/", upstream)])));
        Assert.Contains("'p.localhost'", e.Message, StringComparison.Ordinal);
        Assert.Contains("upstream", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_unix_path_longer_than_sun_path_is_refused()
    {
        var e = await Assert.ThrowsAsync<ArgumentException>(() => StartAsync(new ProxySettings([new ProxyMapping("/", "unix:/" + new string('s', 107))])));
        Assert.Contains("107 bytes", e.Message, StringComparison.Ordinal);
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
        await using var server = await StartAsync(new ProxySettings([new ProxyMapping("/", upstream)]));
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
        var e = await Assert.ThrowsAsync<ArgumentException>(() => StartAsync(new ProxySettings([new ProxyMapping(prefix, "unix:/srv/a.sock")])));
        Assert.Contains("'p.localhost'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_same_prefix_twice_is_refused()
    {
        var e = await Assert.ThrowsAsync<ArgumentException>(() => StartAsync(new ProxySettings(
            [new ProxyMapping("/app", "unix:/srv/a.sock"), new ProxyMapping("/app/", "http://127.0.0.1:8080")])));
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
            new ProxySettings([new ProxyMapping(proxyPrefix, "unix:/srv/a.sock")]),
            new CgiSettings([new CgiMapping(cgiPrefix, _dir.MakeDirectory("cgi"))])));
        Assert.Contains("overlaps", e.Message, StringComparison.Ordinal);
        Assert.Contains("'p.localhost'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Disjoint_proxy_and_cgi_prefixes_are_accepted()
    {
        await using var server = await StartAsync(
            new ProxySettings([new ProxyMapping("/app/", "unix:/srv/a.sock"), new ProxyMapping("/cgi-binary/", "http://127.0.0.1:9")]),
            new CgiSettings([new CgiMapping("/cgi-bin/", _dir.MakeDirectory("cgi"))]));
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
    public void Timeouts_default_when_not_positive()
    {
        var settings = new ProxySettings([], TimeSpan.Zero, TimeSpan.FromSeconds(-1));
        Assert.Equal(ProxySettings.DefaultConnectTimeout, settings.EffectiveConnectTimeout());
        Assert.Equal(ProxySettings.DefaultReadTimeout, settings.EffectiveReadTimeout());
        Assert.Equal(TimeSpan.FromSeconds(5), ProxySettings.DefaultConnectTimeout);
        Assert.Equal(TimeSpan.FromSeconds(60), ProxySettings.DefaultReadTimeout);
    }

    [Fact]
    public void A_mappings_timeouts_win_over_the_vhosts()
    {
        var settings = new ProxySettings([], TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(30));
        var own = new ProxyMapping("/", "unix:/a.sock", TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(300));
        var inherits = new ProxyMapping("/", "unix:/a.sock");
        Assert.Equal(TimeSpan.FromSeconds(1), settings.EffectiveConnectTimeout(own));
        Assert.Equal(TimeSpan.FromSeconds(300), settings.EffectiveReadTimeout(own));
        Assert.Equal(TimeSpan.FromSeconds(2), settings.EffectiveConnectTimeout(inherits));
        Assert.Equal(TimeSpan.FromSeconds(30), settings.EffectiveReadTimeout(inherits));
    }

    private Task<WorkerHttpServer> StartAsync(ProxySettings proxy, CgiSettings? cgi = null) =>
        WorkerHttpServer.StartAsync(
            [Harness.Vhost("p.localhost", _dir.MakeDirectory("site")) with { Proxy = proxy, Cgi = cgi }],
            Serilog.Core.Logger.None,
            CancellationToken.None);
}
