using System.Buffers.Binary;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Text;
using Dispatch.TlsDispatcher.Tls;
using Xunit.Abstractions;

namespace Dispatch.TlsDispatcher.Tests.Tls;

/// <summary>The BouncyCastle engine against real clients over 127.0.0.1: .NET SslStream, openssl s_client, curl.</summary>
public sealed class BcTlsServerTests : IAsyncLifetime
{
    private readonly ITestOutputHelper _output;
    private TlsTestServer _server = null!;

    public BcTlsServerTests(ITestOutputHelper output) => _output = output;

    public Task InitializeAsync()
    {
        _server = new TlsTestServer();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _server.DisposeAsync();

    internal static async Task<(TcpClient Tcp, SslStream Ssl)> ConnectAsync(int port, string serverName, string[] alpn, SslProtocols protocols = SslProtocols.Tls12, TlsCipherSuite[]? suites = null)
    {
        var tcp = new TcpClient { NoDelay = true };
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        var ssl = new SslStream(tcp.GetStream());
        try
        {
            await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = serverName,
                EnabledSslProtocols = protocols,
                ApplicationProtocols = [.. alpn.Select(a => new SslApplicationProtocol(a))],
                CertificateChainPolicy = TestPki.Shared.ChainPolicy(),
                CipherSuitesPolicy = suites is null || !OperatingSystem.IsLinux() ? null : new CipherSuitesPolicy(suites),
            });
        }
        catch
        {
            await ssl.DisposeAsync();
            tcp.Dispose();
            throw;
        }

        return (tcp, ssl);
    }

    private static async Task<byte[]> EchoAsync(SslStream ssl, byte[] payload)
    {
        byte[] received = new byte[payload.Length];
        Task writer = Task.Run(async () =>
        {
            for (int p = 0; p < payload.Length; p += 100_000)
                await ssl.WriteAsync(payload.AsMemory(p, Math.Min(100_000, payload.Length - p)));
        });
        int have = 0;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (have < received.Length)
        {
            int n = await ssl.ReadAsync(received.AsMemory(have), timeout.Token);
            Assert.True(n > 0, $"EOF after {have} bytes");
            have += n;
        }

        await writer;
        return received;
    }

    [Theory]
    [InlineData("h2")]
    [InlineData("http/1.1")]
    public async Task SslStream_tls12_with_sni_and_alpn_echoes(string alpn)
    {
        (TcpClient tcp, SslStream ssl) = await ConnectAsync(_server.Port, "both.example", [alpn]);
        using (tcp)
        await using (ssl)
        {
            Assert.Equal(SslProtocols.Tls12, ssl.SslProtocol);
            Assert.Equal(alpn, ssl.NegotiatedApplicationProtocol.ToString());
            Assert.Equal(TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, ssl.NegotiatedCipherSuite);
            byte[] payload = Encoding.ASCII.GetBytes("hello through BouncyCastle");
            Assert.Equal(payload, await EchoAsync(ssl, payload));
            await ssl.ShutdownAsync();
        }

        ServerConnectionResult result = await _server.NextResultAsync();
        Assert.Null(result.Error);
        Assert.Equal("both.example", result.ServerName);
        Assert.Equal(alpn, result.ApplicationProtocol);
        Assert.Equal("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", result.CipherSuiteName);
        Assert.Equal("TLSv1.2", result.ProtocolVersion);
        Assert.Equal(BcKeyType.EcdsaP256, result.KeyType);
        Assert.Equal((ushort)0x0403, result.SignatureScheme);
    }

    [Fact]
    public async Task SslStream_alpn_server_preference()
    {
        (TcpClient tcp, SslStream ssl) = await ConnectAsync(_server.Port, "both.example", ["http/1.1", "h2"]);
        using (tcp)
        await using (ssl)
            Assert.Equal("h2", ssl.NegotiatedApplicationProtocol.ToString());
        Assert.Equal("h2", (await _server.NextResultAsync()).ApplicationProtocol);
    }

    [Fact]
    public async Task SslStream_without_alpn_gets_none()
    {
        (TcpClient tcp, SslStream ssl) = await ConnectAsync(_server.Port, "both.example", []);
        using (tcp)
        await using (ssl)
            Assert.Equal(default, ssl.NegotiatedApplicationProtocol);
        Assert.Null((await _server.NextResultAsync()).ApplicationProtocol);
    }

    [Fact]
    public async Task Alpn_mismatch_is_refused_with_no_application_protocol()
    {
        await using var server = new TlsTestServer(["http/1.1"]);
        await Assert.ThrowsAnyAsync<Exception>(() => ConnectAsync(server.Port, "both.example", ["h2"]));
        ServerConnectionResult result = await server.NextResultAsync();
        Assert.IsType<AuthenticationException>(result.Error);
        Assert.Equal((byte)120, result.AlertSent);
        Assert.Contains("no common ALPN protocol", result.Error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("rsa.example", BcKeyType.Rsa, TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)]
    [InlineData("ecdsa.example", BcKeyType.EcdsaP256, TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)]
    [InlineData("both.example", BcKeyType.EcdsaP256, TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)]
    public async Task Certificate_follows_the_vhost(string serverName, BcKeyType keyType, TlsCipherSuite suite)
    {
        (TcpClient tcp, SslStream ssl) = await ConnectAsync(_server.Port, serverName, ["http/1.1"]);
        using (tcp)
        await using (ssl)
        {
            Assert.Equal(suite, ssl.NegotiatedCipherSuite);
            Assert.Equal([1, 2, 3], await EchoAsync(ssl, [1, 2, 3]));
        }

        ServerConnectionResult result = await _server.NextResultAsync();
        Assert.Equal(keyType, result.KeyType);
        Assert.Equal(keyType == BcKeyType.Rsa ? (ushort)0x0401 : (ushort)0x0403, result.SignatureScheme);
    }

    [Theory]
    [InlineData(TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)]
    [InlineData(TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)]
    [InlineData(TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)]
    [InlineData(TlsCipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)]
    [InlineData(TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)]
    public async Task Every_suite_echoes(TlsCipherSuite suite)
    {
        (TcpClient tcp, SslStream ssl) = await ConnectAsync(_server.Port, "both.example", ["http/1.1"], suites: [suite]);
        byte[] payload = RandomNumberGenerator.GetBytes(300_000);
        using (tcp)
        await using (ssl)
        {
            Assert.Equal(suite, ssl.NegotiatedCipherSuite);
            Assert.Equal(payload, await EchoAsync(ssl, payload));
        }

        ServerConnectionResult result = await _server.NextResultAsync();
        Assert.Equal(suite.ToString(), result.CipherSuiteName);
    }

    [Fact]
    public async Task Ten_MiB_echoes_intact_both_ways()
    {
        (TcpClient tcp, SslStream ssl) = await ConnectAsync(_server.Port, "both.example", ["http/1.1"]);
        byte[] payload = RandomNumberGenerator.GetBytes(10 * 1024 * 1024);
        using (tcp)
        await using (ssl)
        {
            byte[] received = await EchoAsync(ssl, payload);
            Assert.Equal(SHA256.HashData(payload), SHA256.HashData(received));
            await ssl.ShutdownAsync();
        }

        ServerConnectionResult result = await _server.NextResultAsync();
        Assert.Null(result.Error);
        Assert.Equal(payload.Length, result.BytesReceived);
        Assert.False(result.TruncatedByPeer);
    }

    [Fact]
    public async Task Client_offering_tls13_and_tls12_gets_tls13()
    {
        (TcpClient tcp, SslStream ssl) = await ConnectAsync(_server.Port, "both.example", ["h2"], SslProtocols.Tls12 | SslProtocols.Tls13);
        using (tcp)
        await using (ssl)
        {
            Assert.Equal(SslProtocols.Tls13, ssl.SslProtocol);
            Assert.Equal([9], await EchoAsync(ssl, [9]));
        }

        ServerConnectionResult result = await _server.NextResultAsync();
        Assert.Null(result.Error);
        Assert.Equal("TLSv1.3", result.ProtocolVersion);
    }

    [Theory]
    [InlineData("both.example", BcKeyType.EcdsaP256, (ushort)0x0403)]
    [InlineData("rsa.example", BcKeyType.Rsa, (ushort)0x0804)]
    public async Task Tls13_only_client_is_served(string serverName, BcKeyType keyType, ushort scheme)
    {
        (TcpClient tcp, SslStream ssl) = await ConnectAsync(_server.Port, serverName, ["h2"], SslProtocols.Tls13);
        using (tcp)
        await using (ssl)
        {
            Assert.Equal(SslProtocols.Tls13, ssl.SslProtocol);
            Assert.Equal("h2", ssl.NegotiatedApplicationProtocol.ToString());
            Assert.Equal([1, 2, 3], await EchoAsync(ssl, [1, 2, 3]));
        }

        ServerConnectionResult result = await _server.NextResultAsync();
        Assert.Null(result.Error);
        Assert.True(result.HandshakeComplete);
        Assert.Equal("TLSv1.3", result.ProtocolVersion);
        Assert.Equal(keyType, result.KeyType);
        Assert.Equal(scheme, result.SignatureScheme);
    }

    [Fact]
    public async Task Sec1_and_pkcs1_keys_load_and_mismatched_keys_are_refused()
    {
        TestPki pki = TestPki.Shared;
        using (BcCertifiedKey sec1 = BcCertifiedKey.FromPem(pki.EcdsaChainPem, pki.EcdsaKeySec1Pem))
            Assert.Equal(BcKeyType.EcdsaP256, sec1.KeyType);
        using (BcCertifiedKey pkcs1 = BcCertifiedKey.FromPem(Encoding.ASCII.GetBytes(pki.RsaChainPem), Encoding.ASCII.GetBytes(pki.RsaKeyPkcs1Pem)))
        {
            Assert.Equal(BcKeyType.Rsa, pkcs1.KeyType);
            Assert.Equal(2, pkcs1.Chain.Length);
        }

        Assert.ThrowsAny<CryptographicException>(() => BcCertifiedKey.FromPem(pki.EcdsaChainPem, pki.RsaKeyPkcs8Pem));
        using var otherEc = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        Assert.ThrowsAny<CryptographicException>(() => BcCertifiedKey.FromPem(pki.EcdsaChainPem, otherEc.ExportPkcs8PrivateKeyPem()));
        Assert.ThrowsAny<CryptographicException>(() => BcCertifiedKey.FromPem("no pem here", pki.EcdsaKeyPkcs8Pem));
        await Task.CompletedTask;
    }

    [Fact]
    public async Task Garbage_after_handshake_fails_with_an_alert_not_a_crash()
    {
        // A valid handshake, then a forged application-data record: bad_record_mac.
        (TcpClient tcp, SslStream ssl) = await ConnectAsync(_server.Port, "both.example", ["http/1.1"]);
        using (tcp)
        await using (ssl)
        {
            Assert.Equal([5], await EchoAsync(ssl, [5]));
            byte[] forged = [23, 3, 3, 0, 40, .. new byte[40]];
            await tcp.GetStream().WriteAsync(forged);
            byte[] buffer = new byte[100];
            await Assert.ThrowsAnyAsync<Exception>(async () =>
            {
                int n = await ssl.ReadAsync(buffer);
                if (n == 0)
                    throw new EndOfStreamException();
            });
        }

        ServerConnectionResult result = await _server.NextResultAsync();
        Assert.IsType<BcTlsException>(result.Error);
        Assert.Equal((byte)20, result.AlertSent);
    }

    [Fact]
    public async Task Handshake_timeout_via_token()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, ((IPEndPoint)listener.LocalEndpoint).Port);
        using Socket socket = await listener.AcceptSocketAsync();
        byte[] hello = new HelloBuilder().WithSni("both.example").WithUInt16List(13, 0x0403).With(0xff01, [0]).Build();
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        var session = new BcTlsSession(TestPki.Shared.Both, ["http/1.1"]);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => BcTlsStream.AuthenticateAsServerAsync(socket, session, hello, ownsSocket: false, cts.Token));

        // The ServerHello flight was sent before the wait.
        byte[] buffer = new byte[5];
        int n = await client.GetStream().ReadAsync(buffer);
        Assert.True(n > 0);
        Assert.Equal(22, buffer[0]);
    }

    [Fact]
    public async Task Tls12_client_without_renegotiation_info_or_scsv_is_accepted()
    {
        // RFC 5746 signalling is optional for a server that never renegotiates (sslscan and testssl send neither).
        using var session = new BcTlsSession(TestPki.Shared.Both, ["http/1.1"]);
        byte[] hello = new HelloBuilder().WithSni("both.example").WithUInt16List(13, 0x0403).Build();
        session.Offer(hello, 0, hello.Length);
        Assert.Null(session.AlertSent);
        Assert.Equal("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", session.CipherSuiteName);
        Assert.True(session.OutputAvailable > 0);

        using var ok = new BcTlsSession(TestPki.Shared.Both, ["http/1.1"]);
        byte[] withScsv = new HelloBuilder { CipherSuites = [0xC02B, 0x00FF] }.WithSni("both.example").WithUInt16List(13, 0x0403).Build();
        ok.Offer(withScsv, 0, withScsv.Length);
        Assert.Equal("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", ok.CipherSuiteName);

        // No extensions at all (so no signature_algorithms): refused cleanly, we do not sign with SHA-1.
        using var bare = new BcTlsSession(TestPki.Shared.Both, ["http/1.1"]);
        byte[] noExtensions = new HelloBuilder { Extensions = null, CipherSuites = [0xC02B, 0x00FF] }.Build();
        BcTlsException e = Assert.Throws<BcTlsException>(() => bare.Offer(noExtensions, 0, noExtensions.Length));
        Assert.Equal((byte)40, bare.AlertSent);
        Assert.Contains("signature_algorithms", e.Message, StringComparison.Ordinal);
        await Task.CompletedTask;
    }

    [Fact]
    public async Task Handshake_byte_budget_is_enforced()
    {
        var session = new BcTlsSession(TestPki.Shared.Both, ["http/1.1"], maxHandshakeBytes: 1000);
        byte[] hello = new HelloBuilder().WithSni("both.example").WithUInt16List(13, 0x0403).With(21, new byte[1200]).Build();
        BcTlsException e = Assert.Throws<BcTlsException>(() => session.Offer(hello, 0, hello.Length));
        Assert.Contains("more than 1000 bytes", e.Message, StringComparison.Ordinal);
        Assert.True(session.IsClosed);
        session.Dispose();
        await Task.CompletedTask;
    }

    [Fact]
    public async Task Session_api_without_sockets()
    {
        // Drive a full handshake between a BcTlsSession and an in-memory SslStream client.
        var (clientStream, serverPipe) = MemoryDuplex.Create();
        using var session = new BcTlsSession(TestPki.Shared.EcdsaOnly, ["http/1.1"]);
        using var ssl = new SslStream(clientStream);
        Task handshake = ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "ecdsa.example",
            EnabledSslProtocols = SslProtocols.Tls12,
            ApplicationProtocols = [SslApplicationProtocol.Http11],
            CertificateChainPolicy = TestPki.Shared.ChainPolicy(),
        });

        byte[] buffer = new byte[64 * 1024];
        while (!session.HandshakeComplete)
        {
            int n = serverPipe.Read(buffer, TimeSpan.FromSeconds(10));
            Assert.True(n > 0);
            session.Offer(buffer.AsSpan(0, n));
            int outLength = session.ReadOutputToNetwork(buffer.AsSpan());
            serverPipe.Write(buffer.AsSpan(0, outLength));
        }

        await handshake.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("http/1.1", session.ApplicationProtocol);
        Assert.Equal("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", session.CipherSuiteName);
        Assert.Equal("TLSv1.2", session.ProtocolVersion);
        session.ReleaseHeldInput();

        ssl.Write("ping"u8);
        while (session.PlaintextAvailable < 4)
        {
            int n = serverPipe.Read(buffer, TimeSpan.FromSeconds(10));
            session.Offer(buffer.AsSpan(0, n));
        }

        Span<byte> plain = stackalloc byte[16];
        Assert.Equal(4, session.ReadPlaintext(plain));
        Assert.Equal("ping"u8.ToArray(), plain[..4].ToArray());

        session.WritePlaintext("pong"u8);
        serverPipe.Write(buffer.AsSpan(0, session.ReadOutputToNetwork(buffer.AsSpan())));
        byte[] reply = new byte[4];
        ssl.ReadExactly(reply);
        Assert.Equal("pong"u8.ToArray(), reply);

        session.Close();
        Assert.True(session.IsClosed);
        int closeLength = session.ReadOutputToNetwork(buffer.AsSpan());
        Assert.True(closeLength > 0);
        serverPipe.Write(buffer.AsSpan(0, closeLength));
        Assert.Equal(0, ssl.Read(reply));
    }

    // ---- openssl s_client ----------------------------------------------------------------------

    private async Task<ExternalTool.Result> SClientAsync(string serverName, params string[] extra)
    {
        const string Marker = "ping-from-openssl";
        ExternalTool.Result result = await ExternalTool.RunAsync(
            "openssl",
            ["s_client", "-connect", $"127.0.0.1:{_server.Port}", "-servername", serverName, "-CAfile", TestPki.Shared.CaFile, "-verify_return_error", .. extra],
            stdin: Marker + "\n",
            closeStdinWhen: output => output.Contains(Marker + "\n", StringComparison.Ordinal) || output.Contains(Marker + "\r\n", StringComparison.Ordinal),
            timeout: TimeSpan.FromSeconds(20));
        _output.WriteLine(result.All);
        return result;
    }

    private static string? CipherLine(string output)
        => output.Split('\n').Select(l => l.Trim()).FirstOrDefault(l => l.StartsWith("New, TLSv1.2, Cipher is ", StringComparison.Ordinal))?["New, TLSv1.2, Cipher is ".Length..];

    [Theory]
    [InlineData("both.example", new string[0], "ECDHE-ECDSA-AES128-GCM-SHA256")]
    [InlineData("both.example", new[] { "-cipher", "ECDHE-RSA-CHACHA20-POLY1305" }, "ECDHE-RSA-CHACHA20-POLY1305")]
    [InlineData("rsa.example", new[] { "-cipher", "ECDHE-RSA-CHACHA20-POLY1305" }, "ECDHE-RSA-CHACHA20-POLY1305")]
    [InlineData("both.example", new[] { "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384" }, "ECDHE-ECDSA-AES256-GCM-SHA384")]
    [InlineData("ecdsa.example", new[] { "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305" }, "ECDHE-ECDSA-CHACHA20-POLY1305")]
    [InlineData("rsa.example", new string[0], "ECDHE-RSA-AES128-GCM-SHA256")]
    public async Task Openssl_s_client_tls12(string serverName, string[] extra, string expectedCipher)
    {
        if (!ExternalTool.Exists("openssl"))
            return;
        ExternalTool.Result result = await SClientAsync(serverName, ["-tls1_2", "-alpn", "h2,http/1.1", .. extra]);
        Assert.Equal(expectedCipher, CipherLine(result.StdOut));
        Assert.Contains("Verify return code: 0 (ok)", result.StdOut, StringComparison.Ordinal);
        Assert.Contains("ALPN protocol: h2", result.StdOut, StringComparison.Ordinal);
        Assert.Contains("ping-from-openssl", result.StdOut, StringComparison.Ordinal);
        Assert.Equal(0, result.ExitCode);

        ServerConnectionResult server = await _server.NextResultAsync();
        Assert.Null(server.Error);
        Assert.Equal(serverName, server.ServerName);
        Assert.Equal("h2", server.ApplicationProtocol);
    }

    [Fact]
    public async Task Openssl_default_gets_tls13_with_x25519()
    {
        if (!ExternalTool.Exists("openssl"))
            return;
        ExternalTool.Result result = await SClientAsync("both.example");
        Assert.Contains("New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256", result.StdOut, StringComparison.Ordinal);
        Assert.Contains("Server Temp Key: X25519", result.StdOut, StringComparison.Ordinal);
        Assert.Contains("ping-from-openssl", result.StdOut, StringComparison.Ordinal);
        Assert.Equal(0, result.ExitCode);
        Assert.Null((await _server.NextResultAsync()).Error);
    }

    [Theory]
    [InlineData("P-256", "P-256")]           // a P-256 share, and P-256 is all the client speaks
    [InlineData("P-384:X25519", "X25519")]   // a share we cannot use: HelloRetryRequest for X25519
    [InlineData("P-256:X25519", "P-256")]    // the P-256 share is taken: no HelloRetryRequest round trip for X25519
    [InlineData("X25519:P-256", "X25519")]   // both listed, an X25519 share: X25519
    public async Task Openssl_tls13_groups_and_hello_retry(string groups, string expected)
    {
        if (!ExternalTool.Exists("openssl"))
            return;
        ExternalTool.Result result = await SClientAsync("both.example", "-tls1_3", "-groups", groups);
        Assert.Contains("New, TLSv1.3, Cipher is ", result.StdOut, StringComparison.Ordinal);
        Assert.Contains($"Server Temp Key: {(expected == "P-256" ? "ECDH, prime256v1" : "X25519")}", result.StdOut, StringComparison.Ordinal);
        Assert.Contains("ping-from-openssl", result.StdOut, StringComparison.Ordinal);
        Assert.Null((await _server.NextResultAsync()).Error);
    }

    [Fact]
    public async Task Openssl_tls12_client_without_p256_gets_the_rsa_key_over_x25519()
    {
        if (!ExternalTool.Exists("openssl"))
            return;

        // RFC 8422 5.1: a TLS 1.2 client's groups also bound the ECDSA key's curve (OpenSSL refuses a P-256 key otherwise).
        ExternalTool.Result result = await SClientAsync("both.example", "-tls1_2", "-groups", "X25519");
        Assert.Contains("New, TLSv1.2, Cipher is ECDHE-RSA-", result.StdOut, StringComparison.Ordinal);
        Assert.Contains("Server Temp Key: X25519", result.StdOut, StringComparison.Ordinal);
        Assert.Contains("ping-from-openssl", result.StdOut, StringComparison.Ordinal);
        Assert.Null((await _server.NextResultAsync()).Error);
    }

    [Theory]
    [InlineData("TLS_AES_128_GCM_SHA256")]
    [InlineData("TLS_AES_256_GCM_SHA384")]
    [InlineData("TLS_CHACHA20_POLY1305_SHA256")]
    public async Task Openssl_tls13_every_suite(string suite)
    {
        if (!ExternalTool.Exists("openssl"))
            return;
        ExternalTool.Result result = await SClientAsync("rsa.example", "-tls1_3", "-ciphersuites", suite);
        Assert.Contains($"New, TLSv1.3, Cipher is {suite}", result.StdOut, StringComparison.Ordinal);
        Assert.Contains("Peer signature type: RSA-PSS", result.StdOut, StringComparison.Ordinal);
        Assert.Contains("ping-from-openssl", result.StdOut, StringComparison.Ordinal);
        Assert.Equal(suite, (await _server.NextResultAsync()).CipherSuiteName);
    }

    [Fact]
    public async Task Openssl_tls13_resumes_with_our_ticket_at_the_same_vhost_only()
    {
        if (!ExternalTool.Exists("openssl"))
            return;
        string file = Path.Combine(Path.GetTempPath(), $"bc-ticket-{Guid.NewGuid():N}");
        try
        {
            ExternalTool.Result first = await SClientAsync("both.example", "-tls1_3", "-sess_out", file);
            Assert.Contains("New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256", first.StdOut, StringComparison.Ordinal);
            ServerConnectionResult issued = await _server.NextResultAsync();
            Assert.Null(issued.Error);
            Assert.True(issued.TicketIssued);
            Assert.False(issued.Resumed);
            Assert.True(File.Exists(file));

            ExternalTool.Result again = await SClientAsync("both.example", "-tls1_3", "-sess_in", file);
            Assert.Contains("Reused, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256", again.StdOut, StringComparison.Ordinal);
            Assert.Contains("ping-from-openssl", again.StdOut, StringComparison.Ordinal);
            ServerConnectionResult resumed = await _server.NextResultAsync();
            Assert.Null(resumed.Error);
            Assert.True(resumed.TicketOffered);
            Assert.True(resumed.Resumed);
            Assert.True(resumed.TicketIssued); // a fresh ticket for the next time

            // The same ticket at another vhost: offered, refused, a full handshake instead.
            ExternalTool.Result elsewhere = await SClientAsync("rsa.example", "-tls1_3", "-sess_in", file);
            Assert.Contains("New, TLSv1.3", elsewhere.StdOut, StringComparison.Ordinal);
            Assert.DoesNotContain("Reused", elsewhere.StdOut, StringComparison.Ordinal);
            Assert.Contains("ping-from-openssl", elsewhere.StdOut, StringComparison.Ordinal);
            ServerConnectionResult refused = await _server.NextResultAsync();
            Assert.Null(refused.Error);
            Assert.True(refused.TicketOffered);
            Assert.False(refused.Resumed);
            Assert.Equal(BcKeyType.Rsa, refused.KeyType);
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Openssl_tls12_rsa_pss_only_is_signed_with_pss()
    {
        if (!ExternalTool.Exists("openssl"))
            return;
        ExternalTool.Result result = await SClientAsync("rsa.example", "-tls1_2", "-sigalgs", "rsa_pss_rsae_sha256");
        Assert.Equal("ECDHE-RSA-AES128-GCM-SHA256", CipherLine(result.StdOut));
        Assert.Contains("Peer signature type: RSA-PSS", result.StdOut, StringComparison.Ordinal);
        Assert.Equal((ushort)0x0804, (await _server.NextResultAsync()).SignatureScheme);
    }

    [Fact]
    public async Task Openssl_sigalgs_sha384_is_honoured()
    {
        if (!ExternalTool.Exists("openssl"))
            return;
        ExternalTool.Result result = await SClientAsync("ecdsa.example", "-tls1_2", "-sigalgs", "ECDSA+SHA384:ECDSA+SHA512");
        Assert.Equal("ECDHE-ECDSA-AES128-GCM-SHA256", CipherLine(result.StdOut));
        Assert.Contains("Peer signing digest: SHA384", result.StdOut, StringComparison.Ordinal);
        Assert.Equal((ushort)0x0503, (await _server.NextResultAsync()).SignatureScheme);
    }

    [Fact]
    public async Task Openssl_tls11_only_fails_cleanly_with_an_alert()
    {
        if (!ExternalTool.Exists("openssl"))
            return;
        ExternalTool.Result result = await SClientAsync("both.example", "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0");
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("alert protocol version", result.All, StringComparison.Ordinal);
        ServerConnectionResult server = await _server.NextResultAsync();
        Assert.Equal((byte)70, server.AlertSent);
    }

    [Theory]
    [InlineData("-tls1_2", "-groups", "P-384", 40)]             // no common group
    [InlineData("-tls1_3", "-groups", "P-384", 40)]
    [InlineData("-tls1_2", "-sigalgs", "ed25519", 40)]          // nothing we sign with
    [InlineData("-tls1_3", "-sigalgs", "rsa_pkcs1_sha256", 40)] // PKCS#1 v1.5 is not a TLS 1.3 CertificateVerify scheme
    [InlineData("-tls1_2", "-cipher", "AES128-GCM-SHA256", 40)] // RSA key transport only
    public async Task Openssl_unsupported_parameters_fail_with_handshake_failure(string version, string option, string value, int alert)
    {
        if (!ExternalTool.Exists("openssl"))
            return;
        ExternalTool.Result result = await SClientAsync("rsa.example", version, option, value);
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("alert handshake failure", result.All, StringComparison.Ordinal);
        Assert.Equal((byte)alert, (await _server.NextResultAsync()).AlertSent);
    }

    [Fact]
    public async Task Openssl_renegotiation_is_refused()
    {
        if (!ExternalTool.Exists("openssl"))
            return;
        ExternalTool.Result result = await ExternalTool.RunAsync(
            "openssl",
            ["s_client", "-connect", $"127.0.0.1:{_server.Port}", "-servername", "both.example", "-tls1_2", "-CAfile", TestPki.Shared.CaFile],
            stdin: "R\n",
            closeStdinWhen: output => output.Contains("RENEGOTIATING", StringComparison.Ordinal),
            timeout: TimeSpan.FromSeconds(10));
        _output.WriteLine(result.All);
        ServerConnectionResult server = await _server.NextResultAsync();
        _output.WriteLine($"server: alert sent {server.AlertSent}, received {server.AlertReceived}, error {server.Error?.Message}");
        Assert.True(server.HandshakeComplete);

        // BouncyCastle 2.7 answers a ClientHello after the handshake with a no_renegotiation warning; openssl then
        // gives up with handshake_failure.
        Assert.Equal((byte)100, server.AlertSent);
        Assert.IsType<BcTlsException>(server.Error);
    }

    [Fact]
    public async Task Sslscan_finds_tls13_and_tls12_enabled_and_older_versions_disabled()
    {
        // sslscan probes TLS 1.2 with a ClientHello that has neither renegotiation_info nor the SCSV.
        if (!ExternalTool.Exists("sslscan"))
            return;
        ExternalTool.Result result = await ExternalTool.RunAsync("sslscan", ["--no-colour", "--sni-name=both.example", $"127.0.0.1:{_server.Port}"], timeout: TimeSpan.FromSeconds(120));
        _output.WriteLine(result.All);
        Assert.Matches(@"TLSv1\.3\s+enabled", result.StdOut);
        Assert.Matches(@"TLSv1\.2\s+enabled", result.StdOut);
        Assert.Matches(@"TLSv1\.1\s+disabled", result.StdOut);
        Assert.Matches(@"TLSv1\.0\s+disabled", result.StdOut);
        Assert.Contains("TLS_AES_128_GCM_SHA256", result.StdOut, StringComparison.Ordinal);
        Assert.Contains("ECDHE-ECDSA-AES128-GCM-SHA256", result.StdOut, StringComparison.Ordinal);
        Assert.DoesNotContain("CBC", result.StdOut.Split("Supported Server Cipher(s)")[^1], StringComparison.Ordinal);
    }

    // ---- curl --------------------------------------------------------------------------------------

    [Fact]
    public async Task Curl_with_cacert()
    {
        if (!ExternalTool.Exists("curl"))
            return;
        await using var server = new TlsTestServer(["http/1.1"]);
        ExternalTool.Result result = await ExternalTool.RunAsync(
            "curl",
            ["-sS", "-v", "--max-time", "10", "--cacert", TestPki.Shared.CaFile, "--resolve", $"both.example:{server.Port}:127.0.0.1", $"https://both.example:{server.Port}/"],
            timeout: TimeSpan.FromSeconds(20));
        _output.WriteLine(result.All);
        Assert.Equal(0, result.ExitCode);
        Assert.Equal("hello", result.StdOut.Trim());
        Assert.Contains("SSL connection using TLSv1.3 / TLS_AES_128_GCM_SHA256", result.StdErr, StringComparison.Ordinal);
        Assert.Contains("ALPN: server accepted http/1.1", result.StdErr, StringComparison.Ordinal);
        ServerConnectionResult server1 = await server.NextResultAsync();
        Assert.Null(server1.Error);
        Assert.Equal("http/1.1", server1.ApplicationProtocol);
    }

    [Fact]
    public async Task Curl_rsa_vhost_tls12_only()
    {
        if (!ExternalTool.Exists("curl"))
            return;
        await using var server = new TlsTestServer(["http/1.1"]);
        ExternalTool.Result result = await ExternalTool.RunAsync(
            "curl",
            ["-sS", "-v", "--max-time", "10", "--tlsv1.2", "--tls-max", "1.2", "--cacert", TestPki.Shared.CaFile, "--resolve", $"rsa.example:{server.Port}:127.0.0.1", $"https://rsa.example:{server.Port}/"],
            timeout: TimeSpan.FromSeconds(20));
        _output.WriteLine(result.All);
        Assert.Equal(0, result.ExitCode);
        Assert.Equal("hello", result.StdOut.Trim());
        Assert.Contains("ECDHE-RSA-AES128-GCM-SHA256", result.StdErr, StringComparison.Ordinal);
        Assert.Equal(BcKeyType.Rsa, (await server.NextResultAsync()).KeyType);
    }

    [Fact]
    public async Task BouncyCastle_key_exchange_mode_still_works()
    {
        await using var server = new TlsTestServer(["http/1.1"], BcKeyExchangeImplementation.BouncyCastle);
        foreach (string name in new[] { "ecdsa.example", "rsa.example" })
        {
            (TcpClient tcp, SslStream ssl) = await ConnectAsync(server.Port, name, ["http/1.1"]);
            using (tcp)
            await using (ssl)
                Assert.Equal([7, 7], await EchoAsync(ssl, [7, 7]));
            Assert.Null((await server.NextResultAsync()).Error);
        }
    }

    [Fact]
    public async Task A_read_never_waits_behind_a_write_stalled_by_the_peer()
    {
        // The server reads and writes 32 MiB at once on one stream; this client first writes everything and only then
        // reads. The server's write stalls (nobody reads its output), so its read side must keep going on its own.
        // Small socket buffers (no autotuning) so that 32 MiB cannot hide in the kernel.
        const long Bytes = 32L * 1024 * 1024;
        await using var server = new TlsTestServer(["http/1.1"], socketBufferSize: 128 * 1024);
        (TcpClient tcp, SslStream ssl) = await ConnectAsync(server.Port, "both.example", ["http/1.1"]);
        using (tcp)
        await using (ssl)
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
            byte[] header = new byte[12];
            "DUP "u8.CopyTo(header);
            BinaryPrimitives.WriteInt64BigEndian(header.AsSpan(4), Bytes);
            await ssl.WriteAsync(header, timeout.Token);
            byte[] chunk = new byte[1 << 20];
            for (long sent = 0; sent < Bytes; sent += chunk.Length)
                await ssl.WriteAsync(chunk, timeout.Token);

            long got = 0;
            while (got < Bytes)
            {
                int n = await ssl.ReadAsync(chunk, timeout.Token);
                Assert.True(n > 0);
                got += n;
            }
        }

        Assert.Null((await server.NextResultAsync()).Error);
    }

    [Fact]
    public async Task Sink_and_source_commands_work()
    {
        (TcpClient tcp, SslStream ssl) = await ConnectAsync(_server.Port, "both.example", ["http/1.1"]);
        using (tcp)
        await using (ssl)
        {
            byte[] header = new byte[12];
            "SINK"u8.CopyTo(header);
            BinaryPrimitives.WriteInt64BigEndian(header.AsSpan(4), 1000);
            await ssl.WriteAsync(header);
            await ssl.WriteAsync(new byte[1000]);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            byte[] ok = new byte[2];
            await ssl.ReadExactlyAsync(ok, timeout.Token);
            Assert.Equal("OK"u8.ToArray(), ok);

            "SRC "u8.CopyTo(header);
            BinaryPrimitives.WriteInt64BigEndian(header.AsSpan(4), 500_000);
            await ssl.WriteAsync(header);
            await ssl.ReadExactlyAsync(new byte[500_000], timeout.Token);
        }

        await _server.NextResultAsync();
    }
}
