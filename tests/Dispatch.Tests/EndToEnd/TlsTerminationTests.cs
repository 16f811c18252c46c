using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// TLS terminated in the dispatcher (BouncyCastle, .NET crypto) and proxied as plaintext to the
/// tenant's worker, checked with clients no one here wrote: curl, openssl s_client, gnutls-cli,
/// .NET HttpClient.
/// </summary>
public sealed class TlsTerminationTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly List<IDisposable> _cleanup = [];

    public TlsTerminationTests(ITestOutputHelper output) => _output = output;

    private sealed record Setup(DispatchInstance Dispatch, int TlsPort, string RootA, string Live);

    private Setup Start(string name)
    {
        var site = TwoTenantSite.Create(name, "<h1>tenant A over TLS</h1>", "<h1>tenant B over TLS</h1>");
        var big = new byte[10 << 20];
        new Random(7).NextBytes(big);
        File.WriteAllBytes(Path.Combine(site.RootA, "big.bin"), big);
        TestWorld.Chown(Path.Combine(site.RootA, "big.bin"), TestWorld.TenantA, recursive: false);
        site.Config["dispatcher"]!["handshakeTimeout"] = "2s";
        site.Terminate("a", rsaToo: true);
        site.Terminate("b", rsaToo: true);
        var dispatch = site.StartReady(_output);
        _cleanup.Add(dispatch);
        return new Setup(dispatch, site.TlsPort, site.RootA, site.Live);
    }

    private static string[] CurlTls(Setup s, string host) =>
        ["--cacert", TestWorld.CaPath, "--resolve", $"{host}:{s.TlsPort}:127.0.0.1", $"https://{host}:{s.TlsPort}/"];

    [SkippableFact]
    public void Curl_reaches_each_tenant_over_https_and_an_unknown_name_is_refused_with_an_alert()
    {
        var s = Start("tls-curl");
        var a = Tools.Curl(CurlTls(s, "a.localhost"));
        Assert.Equal(200, a.Status);
        Assert.Contains("tenant A over TLS", a.Body, StringComparison.Ordinal);
        var b = Tools.Curl(CurlTls(s, "b.localhost"));
        Assert.Equal(200, b.Status);
        Assert.Contains("tenant B over TLS", b.Body, StringComparison.Ordinal);

        var unknown = Tools.Run("curl", ["-sS", "--max-time", "20", .. CurlTls(s, "nobody.localhost")]);
        Assert.Equal(35, unknown.ExitCode);
        Assert.Contains("unrecognized name", unknown.Stderr, StringComparison.Ordinal);

        // The worker saw the TLS details the dispatcher negotiated.
        s.Dispatch.WaitForLine(new Regex(@"a\.localhost 127\.0\.0\.1 ""GET /"" 200 .* sni=a\.localhost"));
    }

    [SkippableFact]
    public void Openssl_negotiates_ECDHE_ECDSA_AES128_GCM_by_default_and_RSA_or_ChaCha20_when_asked()
    {
        var s = Start("tls-openssl");
        string Handshake(params string[] extra)
        {
            var r = Tools.RunWithInput(string.Empty, "openssl", ["s_client", "-connect", $"127.0.0.1:{s.TlsPort}", "-servername", "a.localhost", "-CAfile", TestWorld.CaPath, .. extra]);
            _output.WriteLine(r.Stdout + r.Stderr);
            return r.Stdout + r.Stderr;
        }

        var byDefault = Handshake("-tls1_2");
        Assert.Contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256", byDefault, StringComparison.Ordinal);
        Assert.Contains("CN = a.localhost", byDefault, StringComparison.Ordinal);
        Assert.Contains("Verify return code: 0 (ok)", byDefault, StringComparison.Ordinal);

        var rsa = Handshake("-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384");
        Assert.Contains("Cipher is ECDHE-RSA-AES256-GCM-SHA384", rsa, StringComparison.Ordinal);
        Assert.Contains("Server public key is 2048 bit", rsa, StringComparison.Ordinal);

        var chacha = Handshake("-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305");
        Assert.Contains("Cipher is ECDHE-ECDSA-CHACHA20-POLY1305", chacha, StringComparison.Ordinal);

        // A client offering 1.3 and 1.2 gets 1.3 (X25519); one offering only 1.3 too.
        Assert.Contains("New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256", Handshake(), StringComparison.Ordinal);
        Assert.Contains("Server Temp Key: X25519", Handshake(), StringComparison.Ordinal);
        Assert.Contains("New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256", Handshake("-tls1_3"), StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task DotNet_HttpClient_and_gnutls_cli_interoperate()
    {
        var s = Start("tls-interop");
        using var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
                await socket.ConnectAsync(IPAddress.Loopback, s.TlsPort, ct);
                return new NetworkStream(socket, ownsSocket: true);
            },
            SslOptions = new SslClientAuthenticationOptions
            {
                EnabledSslProtocols = System.Security.Authentication.SslProtocols.Tls12 | System.Security.Authentication.SslProtocols.Tls13,
                CertificateChainPolicy = TestWorld.SampleCaChainPolicy(),
            },
        };
        using var client = new HttpClient(handler);
        var body = await client.GetStringAsync(new Uri($"https://b.localhost:{s.TlsPort}/"));
        Assert.Contains("tenant B over TLS", body, StringComparison.Ordinal);

        // gnutls-cli closes the connection at the end of its input, so keep stdin open until the server closes.
        var psi = new System.Diagnostics.ProcessStartInfo("gnutls-cli") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { "--x509cafile", TestWorld.CaPath, "--sni-hostname", "a.localhost", "--verify-hostname", "a.localhost", "-p", $"{s.TlsPort}", "127.0.0.1" })
            psi.ArgumentList.Add(arg);
        using var gnutls = System.Diagnostics.Process.Start(psi)!;
        var stderr = gnutls.StandardError.ReadToEndAsync();
        await gnutls.StandardInput.WriteAsync("GET / HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n");
        await gnutls.StandardInput.FlushAsync();
        var stdout = await gnutls.StandardOutput.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(30));
        gnutls.StandardInput.Close();
        await gnutls.WaitForExitAsync();
        var g = new Tools.Result(gnutls.ExitCode, stdout, await stderr);
        _output.WriteLine(g.Stdout + g.Stderr);
        Assert.Contains("HTTP/1.1 200 OK", g.Stdout, StringComparison.Ordinal);
        Assert.Contains("tenant A over TLS", g.Stdout, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_10_MiB_download_arrives_intact()
    {
        var s = Start("tls-download");
        var target = Path.Combine(Path.GetTempPath(), $"dispatch-dl-{Guid.NewGuid():N}");
        try
        {
            var r = Tools.Run("curl", ["-sS", "--max-time", "60", "-o", target, "--cacert", TestWorld.CaPath, "--resolve", $"a.localhost:{s.TlsPort}:127.0.0.1", $"https://a.localhost:{s.TlsPort}/big.bin"]);
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.Equal(SHA256.HashData(File.ReadAllBytes(Path.Combine(s.RootA, "big.bin"))), SHA256.HashData(File.ReadAllBytes(target)));
        }
        finally
        {
            File.Delete(target);
        }
    }

    [SkippableFact]
    public void The_dispatcher_cannot_open_any_certificate_file_after_its_drop()
    {
        var s = Start("tls-keys");
        var pid = s.Dispatch.DispatcherPid;
        var proof = s.Dispatch.WaitForLine(new Regex($@"Jail of Dispatcher {pid} \(dispatcher\) holds: .*")).Value;
        foreach (var lineage in new[] { "a.localhost", "a.localhost-rsa", "b.localhost", "b.localhost-rsa" })
            Assert.Contains($"{Path.Combine(s.Live, lineage, "privkey.pem")} [0/32 threads opened; child", proof, StringComparison.Ordinal);
        // And yet it serves with them: it only holds what the master sent.
        Assert.Equal(200, Tools.Curl(CurlTls(s, "a.localhost")).Status);
    }

    [SkippableFact]
    public async Task Malformed_and_stalled_ClientHellos_are_closed_without_disturbing_a_good_handshake_or_leaking()
    {
        var s = Start("tls-bad-hellos");
        Assert.Equal(200, Tools.Curl(CurlTls(s, "a.localhost")).Status); // warm
        Assert.Equal(200, Tools.Curl(CurlTls(s, "b.localhost")).Status);
        static Dictionary<int, string> Sockets(int pid) => Tools.Descriptors(pid).Where(kv => kv.Value.StartsWith("socket:", StringComparison.Ordinal)).ToDictionary();
        var before = Sockets(s.Dispatch.DispatcherPid);

        var rng = new Random(11);
        byte[] Random(int n)
        {
            var b = new byte[n];
            rng.NextBytes(b);
            return b;
        }

        // A valid record header and handshake header whose lengths lie about what follows.
        byte[] hello = [0x16, 0x03, 0x01, 0x00, 0x30, 0x01, 0x00, 0x00, 0x2c, 0x03, 0x03, .. new byte[32], 0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00, 0x00, 0x09];
        byte[] truncated = hello[..20];
        var lying = (byte[])hello.Clone();
        lying[8] = 0x10; // handshake length larger than the record
        byte[] hugeRecord = [0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0xff, 0xff, 0xff];
        var cases = new (string Name, byte[] Bytes, bool HalfClose)[]
        {
            ("random bytes", Random(600), false),
            ("random after a handshake byte", [0x16, 0x03, 0x01, .. Random(400)], false),
            ("truncated then closed", truncated, true),
            ("lengths that lie", lying, false),
            ("oversized record", hugeRecord, false),
            ("stalled after the record header", hello[..5], false),
            ("nothing at all", [], false),
        };
        var bad = cases.Select(c => Tools.RawExchangeAsync(s.TlsPort, c.Bytes, c.HalfClose)).ToList();
        var burst = Enumerable.Range(0, 1000).Select(i => Tools.RawExchangeAsync(s.TlsPort, i % 2 == 0 ? Random(64 + (i % 300)) : [0x16, 0x03, 0x03, .. Random(300)])).ToList();

        // Meanwhile real handshakes are served.
        for (var i = 0; i < 3; i++)
            Assert.Equal(200, Tools.Curl(CurlTls(s, "a.localhost")).Status);

        var answers = await Task.WhenAll(bad);
        for (var i = 0; i < cases.Length; i++)
        {
            _output.WriteLine($"{cases[i].Name}: {answers[i].Length} bytes back");
            Assert.DoesNotContain("HTTP/1.1 200", answers[i], StringComparison.Ordinal);
            Assert.True(answers[i].Length == 0 || answers[i][0] == (char)0x15, $"{cases[i].Name}: expected an alert or a close, got {answers[i].Length} bytes starting {(answers[i].Length > 0 ? (int)answers[i][0] : -1)}");
        }

        await Task.WhenAll(burst);
        Assert.True(
            Tools.Eventually(() => Sockets(s.Dispatch.DispatcherPid).Count <= before.Count),
            $"dispatcher sockets: {before.Count} before, now also: {string.Join(", ", Sockets(s.Dispatch.DispatcherPid).Where(kv => !before.ContainsKey(kv.Key)).Select(kv => $"{kv.Key}->{kv.Value}"))}");
        Assert.Equal(200, Tools.Curl(CurlTls(s, "b.localhost")).Status);
    }

    public void Dispose()
    {
        foreach (var c in _cleanup)
            c.Dispose();
    }
}
