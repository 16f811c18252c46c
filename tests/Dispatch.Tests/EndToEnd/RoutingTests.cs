using System.Buffers.Binary;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>Default and strict names, redirects, ACME, ALPN/HTTP/2 and its coalescing guard, PROXY protocol, IPv6, Host vs SNI.</summary>
public sealed class RoutingTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly List<IDisposable> _cleanup = [];

    public RoutingTests(ITestOutputHelper output) => _output = output;

    private sealed record Setup(DispatchInstance Dispatch, int HttpPort, int TlsPort, string RootA, string RootB);

    private Setup Start(string name, Action<JsonObject, int, int>? adjust = null)
    {
        var site = TwoTenantSite.Create(name, "tenant A", "tenant B", moreA: new Dictionary<string, string> { [".well-known/acme-challenge/tok123"] = "acme-proof-a" });
        foreach (var v in new[] { "a", "b" })
            site.Vhost(v)["certDir"] = site.CertDir($"{v}.localhost");
        adjust?.Invoke(site.Config, site.HttpPort, site.TlsPort);
        var dispatch = site.StartReady(_output);
        _cleanup.Add(dispatch);
        return new Setup(dispatch, site.HttpPort, site.TlsPort, site.RootA, site.RootB);
    }

    private static string Handshake(int port, params string[] extra)
    {
        var r = Tools.RunWithInput(string.Empty, "openssl", ["s_client", "-connect", $"127.0.0.1:{port}", "-CAfile", TestWorld.CaPath, .. extra]);
        return r.Stdout + r.Stderr;
    }

    [SkippableFact]
    public void Strict_by_default_unknown_or_missing_names_are_refused_and_a_default_vhost_takes_them_when_configured()
    {
        var strict = Start("strict");
        Assert.Contains("unrecognized name", Handshake(strict.TlsPort, "-noservername"), StringComparison.Ordinal);
        Assert.Contains("unrecognized name", Handshake(strict.TlsPort, "-servername", "other.example"), StringComparison.Ordinal);
        Assert.Equal(404, Tools.Curl("-H", "Host: other.example", $"http://127.0.0.1:{strict.HttpPort}/").Status);

        var lenient = Start("default-vhost", (c, _, _) => c["defaultVhost"] = "b.localhost");
        Assert.Contains("CN = b.localhost", Handshake(lenient.TlsPort, "-noservername"), StringComparison.Ordinal);
        var other = Tools.Curl("-H", "Host: other.example", $"http://127.0.0.1:{lenient.HttpPort}/");
        // Routed to b's worker, which answers 421 for a name that is not one of its own.
        Assert.Equal(421, other.Status);
        Assert.Contains("Worker", lenient.Dispatch.Log, StringComparison.Ordinal);
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"http://127.0.0.1:{lenient.HttpPort}/").Status);
    }

    [SkippableFact]
    public void Plain_http_redirects_to_https_from_the_dispatcher_but_acme_challenges_reach_the_worker()
    {
        var s = Start("redirect", (c, _, _) => c["vhosts"]!["a.localhost"]!["http"] = "redirect");
        var url = $"http://127.0.0.1:{s.HttpPort}";
        var get = Tools.Curl("-H", "Host: a.localhost", $"{url}/some/page?x=1");
        Assert.Equal(301, get.Status);
        Assert.Contains($"Location: https://a.localhost:{s.TlsPort}/some/page?x=1", get.Headers, StringComparison.Ordinal);
        var post = Tools.Curl("-X", "POST", "-d", "x", "-H", "Host: a.localhost", $"{url}/form");
        Assert.Equal(308, post.Status);

        var acme = Tools.Curl("-H", "Host: a.localhost", $"{url}/.well-known/acme-challenge/tok123");
        Assert.Equal(200, acme.Status);
        Assert.Equal("acme-proof-a", acme.Body);

        // b serves plain HTTP as before; the redirect needed no worker for a until the ACME request.
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"{url}/").Status);
        Assert.Single(Regex.Matches(s.Dispatch.Log, "Worker \\d+ for pool a ready"));
    }

    [SkippableFact]
    public void Http2_is_negotiated_with_alpn_unless_the_certificate_covers_another_pools_names()
    {
        // www.a.localhost (covered by a's certificate) is routed to pool b: a must not offer h2.
        var s = Start("alpn", (c, _, _) =>
        {
            c["vhosts"]!["a.localhost"]!["aliases"] = new JsonArray();
            c["vhosts"]!["b.localhost"]!["aliases"] = new JsonArray("www.a.localhost");
        });
        var b = Tools.Run("curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--cacert", TestWorld.CaPath, "--resolve", $"b.localhost:{s.TlsPort}:127.0.0.1", $"https://b.localhost:{s.TlsPort}/");
        Assert.Equal("2 200", b.Stdout);
        var a = Tools.Run("curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--cacert", TestWorld.CaPath, "--resolve", $"a.localhost:{s.TlsPort}:127.0.0.1", $"https://a.localhost:{s.TlsPort}/");
        Assert.Equal("1.1 200", a.Stdout);
        s.Dispatch.WaitForLine(new Regex(@"Vhost a\.localhost: its certificate also covers names served by another pool, so HTTP/2 is not offered"));
        s.Dispatch.WaitForLine(new Regex(@"b\.localhost .*HTTP/2"));
    }

    [SkippableFact]
    public async Task A_request_for_another_pool_on_a_TLS_connection_gets_421_and_the_connection_is_closed()
    {
        var s = Start("tls-421");
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, s.TlsPort);
        await using var ssl = new SslStream(tcp.GetStream());
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "a.localhost",
            CertificateChainPolicy = TestWorld.SampleCaChainPolicy(),
        });
        await ssl.WriteAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\nGET / HTTP/1.1\r\nHost: b.localhost\r\n\r\nGET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n"));
        var all = new MemoryStream();
        await ssl.CopyToAsync(all).WaitAsync(TimeSpan.FromSeconds(30));
        var text = Encoding.ASCII.GetString(all.ToArray());
        Assert.Equal(["200", "421"], Regex.Matches(text, @"HTTP/1\.1 (\d{3})").Select(m => m.Groups[1].Value));
        Assert.DoesNotContain("tenant B", text, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Wildcards_cover_one_label_exact_names_win_and_case_and_trailing_dots_do_not_matter()
    {
        var s = Start("wildcards", (c, _, _) =>
        {
            c["vhosts"]!["a.localhost"]!["aliases"] = new JsonArray("*.a.localhost");
            c["vhosts"]!["b.localhost"]!["aliases"] = new JsonArray("exact.a.localhost");
        });
        string Body(string host) => Tools.Curl("-H", $"Host: {host}", $"http://127.0.0.1:{s.HttpPort}/").Body;
        Assert.Equal("tenant A", Body("x.a.localhost"));
        Assert.Equal("tenant A", Body("X.A.LOCALHOST."));
        Assert.Equal("tenant B", Body("exact.a.localhost")); // exact beats the wildcard
        Assert.Equal(404, Tools.Curl("-H", "Host: y.x.a.localhost", $"http://127.0.0.1:{s.HttpPort}/").Status);

        // Over TLS the SNI follows the same rules (a's certificate covers a.localhost and www.a.localhost only).
        var tls = Tools.Run("curl", "-sS", "--cacert", TestWorld.CaPath, "--resolve", $"www.a.localhost:{s.TlsPort}:127.0.0.1", $"https://www.a.localhost:{s.TlsPort}/");
        Assert.Equal("tenant A", tls.Stdout);
    }

    [SkippableFact]
    public void Curl_reusing_one_connection_for_another_pools_name_gets_421_and_reconnects_for_the_next()
    {
        var s = Start("curl-421");
        string[] Leg(string host) =>
            ["-o", "/dev/null", "-w", "%{http_code} %{num_connects}\n", "--cacert", TestWorld.CaPath, "--resolve", $"a.localhost:{s.TlsPort}:127.0.0.1", "-H", $"Host: {host}", $"https://a.localhost:{s.TlsPort}/"];
        var r = Tools.Run("curl", ["-sS", "--http1.1", .. Leg("a.localhost"), "--next", .. Leg("b.localhost"), "--next", .. Leg("a.localhost")]);
        _output.WriteLine(r.Stdout + r.Stderr);
        // Second request on the same connection (no new connect) is misdirected; the server closed it, so the third reconnects.
        Assert.Equal(["200 1", "421 0", "200 1"], r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [SkippableFact]
    public async Task PROXY_headers_are_honoured_from_trusted_sources_only()
    {
        var untrustedPort = TestWorld.FreePort();
        var s = Start("proxy-protocol", (c, http, _) =>
        {
            c["listen"]![0]!["trustedProxies"] = new JsonArray("127.0.0.0/8");
            c["listen"]!.AsArray().Add(new JsonObject { ["endpoint"] = $"127.0.0.1:{untrustedPort}", ["protocol"] = "http", ["trustedProxies"] = new JsonArray("192.0.2.1") });
        });
        var request = "GET / HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n";

        var v1 = await Tools.RawExchangeAsync(s.HttpPort, Encoding.ASCII.GetBytes("PROXY TCP4 203.0.113.7 127.0.0.1 55555 80\r\n" + request));
        Assert.StartsWith("HTTP/1.1 200", v1, StringComparison.Ordinal);
        s.Dispatch.WaitForLine(new Regex(@"a\.localhost 203\.0\.113\.7 ""GET /"" 200"));

        byte[] v2 = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x21, 0, 36, .. IPAddress.Parse("2001:db8::42").GetAddressBytes(), .. IPAddress.IPv6Loopback.GetAddressBytes(), 0xAB, 0xCD, 0, 80];
        var viaV2 = await Tools.RawExchangeAsync(s.HttpPort, [.. v2, .. Encoding.ASCII.GetBytes(request)]);
        Assert.StartsWith("HTTP/1.1 200", viaV2, StringComparison.Ordinal);
        s.Dispatch.WaitForLine(new Regex(@"a\.localhost 2001:db8::42 ""GET /"" 200"));

        // A trusted source must send the header.
        var missing = await Tools.RawExchangeAsync(s.HttpPort, Encoding.ASCII.GetBytes(request));
        Assert.Equal(string.Empty, missing);

        // From an untrusted source the header is not believed: the request is refused, nothing is logged as 198.51.100.1.
        var spoofed = await Tools.RawExchangeAsync(untrustedPort, Encoding.ASCII.GetBytes("PROXY TCP4 198.51.100.1 127.0.0.1 1 80\r\n" + request));
        Assert.StartsWith("HTTP/1.1 400", spoofed, StringComparison.Ordinal);
        Assert.StartsWith("HTTP/1.1 200", await Tools.RawExchangeAsync(untrustedPort, Encoding.ASCII.GetBytes(request)), StringComparison.Ordinal);
        Assert.DoesNotContain("198.51.100.1 \"GET", s.Dispatch.Log, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void IPv6_listeners_serve_and_show_the_client_in_its_own_form()
    {
        var v6Port = TestWorld.FreePort();
        var s = Start("ipv6", (c, _, _) => c["listen"]!.AsArray().Add(new JsonObject { ["endpoint"] = $"[::1]:{v6Port}", ["protocol"] = "http" }));
        var r = Tools.Curl("-g", "-H", "Host: a.localhost", $"http://[::1]:{v6Port}/");
        Assert.Equal(200, r.Status);
        s.Dispatch.WaitForLine(new Regex(@"a\.localhost ::1 ""GET /"" 200"));
        s.Dispatch.WaitForLine(new Regex($@"listening .*http \[::1\]:{v6Port}"));
    }

    public void Dispose()
    {
        foreach (var c in _cleanup)
            c.Dispose();
    }
}
