using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// The same client cells against both termination engines: each either works or fails the way the
/// configuration says (both engines speak TLS 1.3 and 1.2).
/// </summary>
public sealed class InteropMatrixTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public InteropMatrixTests(ITestOutputHelper output) => _output = output;

    private int Start(string engine)
    {
        var site = TwoTenantSite.Create($"matrix-{engine}", "matrix A", "matrix B");
        site.Config["dispatcher"]!["engine"] = engine == "passthrough" ? "openssl" : engine;
        foreach (var v in new[] { "a", "b" })
            site.Vhost(v)["certDirs"] = new JsonArray(site.CertDir($"{v}.localhost"), site.CertDir($"{v}.localhost-rsa"));
        if (engine == "passthrough")
        {
            // a's worker terminates with the tenant's own copy (ECDSA only).
            var own = site.TenantCertificates("a-certs", TestWorld.TenantA);
            var a = site.Vhost("a").AsObject();
            a.Remove("certDirs");
            a["tls"] = "passthrough";
            a["certDir"] = Path.Combine(own, "live", "a.localhost");
        }

        _dispatch = site.StartReady(_output);
        return site.TlsPort;
    }

    private static string OpenSsl(int port, params string[] extra)
    {
        var r = Tools.RunWithInput(string.Empty, "openssl", ["s_client", "-connect", $"127.0.0.1:{port}", "-servername", "a.localhost", "-CAfile", TestWorld.CaPath, .. extra]);
        return r.Stdout + r.Stderr;
    }

    private static string CurlVersion(int port, string httpFlag)
    {
        var r = Tools.Run("curl", "-sS", httpFlag, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--cacert", TestWorld.CaPath, "--resolve", $"a.localhost:{port}:127.0.0.1", $"https://a.localhost:{port}/");
        return r.Stdout + r.Stderr;
    }

    [SkippableTheory]
    [InlineData("bouncycastle")]
    [InlineData("openssl")]
    [InlineData("passthrough")]
    public async Task Every_client_works_or_fails_as_configured(string engine)
    {
        var port = Start(engine);
        var tls13 = true;

        Assert.Equal("1.1 200", CurlVersion(port, "--http1.1"));
        Assert.Equal("2 200", CurlVersion(port, "--http2"));

        var v12 = OpenSsl(port, "-tls1_2");
        Assert.Contains("Protocol  : TLSv1.2", v12, StringComparison.Ordinal);
        Assert.Contains("Verify return code: 0 (ok)", v12, StringComparison.Ordinal);
        var v13 = OpenSsl(port, "-tls1_3");
        if (tls13)
        {
            Assert.Contains("New, TLSv1.3, Cipher is TLS_AES_", v13, StringComparison.Ordinal);
            Assert.Contains("Server Temp Key: X25519", v13, StringComparison.Ordinal);
        }
        else
        {
            Assert.Contains("alert protocol version", v13, StringComparison.Ordinal);
        }

        // Both offered: the best the engine has.
        Assert.Contains(tls13 ? "New, TLSv1.3" : "New, TLSv1.2", OpenSsl(port), StringComparison.Ordinal);

        // A client that only verifies RSA signatures gets the RSA certificate (the passthrough tenant has none: refused).
        var rsa = OpenSsl(port, "-tls1_2", "-sigalgs", "RSA+SHA256:RSA+SHA384");
        if (engine == "passthrough")
        {
            Assert.Contains("Cipher is (NONE)", rsa, StringComparison.Ordinal);
        }
        else
        {
            Assert.Contains("Peer signature type: RSA", rsa, StringComparison.Ordinal);
            Assert.Contains("Verify return code: 0 (ok)", rsa, StringComparison.Ordinal);
        }

        var gnutls = Tools.RunWithInput(string.Empty, "gnutls-cli", "--x509cafile", TestWorld.CaPath, "--sni-hostname", "a.localhost", "--verify-hostname", "a.localhost", "-p", $"{port}", "127.0.0.1");
        _output.WriteLine(gnutls.Stdout);
        Assert.Contains("Handshake was completed", gnutls.Stdout, StringComparison.Ordinal);
        Assert.Contains(tls13 ? "(TLS1.3" : "(TLS1.2", gnutls.Stdout, StringComparison.Ordinal);

        // Neither engine accepts RSA key transport or SHA-1 suites.
        Assert.Contains("Cipher is (NONE)", OpenSsl(port, "-tls1_2", "-cipher", "AES256-GCM-SHA384"), StringComparison.Ordinal);
        Assert.Contains("Cipher is (NONE)", OpenSsl(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"), StringComparison.Ordinal);

        // AEAD suites only, on both engines (and in the docs): CBC suites are refused even with SHA-2. (Passthrough is
        // the tenant's own worker terminating TLS.)
        if (engine != "passthrough")
        {
            foreach (var cbc in new[] { "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384" })
                Assert.Contains("Cipher is (NONE)", OpenSsl(port, "-tls1_2", "-cipher", cbc), StringComparison.Ordinal);

            // A client that prefers CBC but also offers an AEAD suite gets the AEAD suite.
            Assert.Contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256", OpenSsl(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"), StringComparison.Ordinal);
        }

        if (tls13)
        {
            // Session tickets resume at the same vhost, never at another tenant's.
            var session = Path.Combine(Path.GetTempPath(), $"dispatch-sess-{Guid.NewGuid():N}");
            try
            {
                var first = Tools.RunWithInput("GET / HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n", "openssl", "s_client", "-connect", $"127.0.0.1:{port}", "-servername", "a.localhost", "-ign_eof", "-sess_out", session);
                Assert.Contains("New, TLSv1.3", first.Stdout, StringComparison.Ordinal);
                Assert.Contains("Reused, TLSv1.3", OpenSsl(port, "-sess_in", session), StringComparison.Ordinal);
                var elsewhere = Tools.RunWithInput(string.Empty, "openssl", "s_client", "-connect", $"127.0.0.1:{port}", "-servername", "b.localhost", "-sess_in", session, "-CAfile", TestWorld.CaPath);
                Assert.Contains("New, TLSv1.3", elsewhere.Stdout, StringComparison.Ordinal);
            }
            finally
            {
                File.Delete(session);
            }
        }

        using var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
                await socket.ConnectAsync(IPAddress.Loopback, port, ct);
                return new NetworkStream(socket, ownsSocket: true);
            },
            SslOptions = new SslClientAuthenticationOptions
            {
                CertificateChainPolicy = TestWorld.SampleCaChainPolicy(),
            },
        };
        using var client = new HttpClient(handler) { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
        using var response = await client.GetAsync(new Uri($"https://a.localhost:{port}/"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HttpVersion.Version20, response.Version);
        Assert.Equal("matrix A", await response.Content.ReadAsStringAsync());
    }

    public void Dispose() => _dispatch?.Dispose();
}
