using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Dispatch.Protocol.Tls;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;
using Dispatch.Worker.Tls;
using Org.BouncyCastle.Tls;
using Serilog.Events;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests.Tls;

/// <summary>
/// The worker's TLS record layer over handed sessions: a real TLS client (BouncyCastle) completes its handshake with a
/// stand-in for the dispatcher, the server end of the TCP socket and the session state go to the worker, and the
/// client talks HTTP through its own record layer — or, for inputs a TLS library will not produce, record by record.
/// </summary>
public sealed class TlsRecordLayerTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const ushort Tls13 = TlsSessionState.Tls13;
    private const ushort Tls12 = TlsSessionState.Tls12;

    private static readonly byte[] Big = CreateBig();

    private readonly TempDir _dir = new();
    private Harness _harness = null!;
    private long _nextId = 100;

    public async Task InitializeAsync()
    {
        _dir.Write("site/index.html", "<h1>home</h1>");
        _dir.Write("site/ten.txt", "0123456789");
        _dir.Write("site/big.bin", Big);
        var sha = _dir.Write("cgi/sha.sh", "#!/bin/sh\nsum=$(sha256sum | cut -c1-64)\nprintf 'Content-Type: text/plain\\nContent-Length: 64\\n\\n%s' \"$sum\"\n");
        File.SetUnixFileMode(sha, (UnixFileMode)0x1ed);
        _harness = await Harness.StartAsync(Harness.Vhost("a.localhost", _dir.Combine("site")) with
        {
            Cgi = new CgiSettings([new CgiMapping("/cgi-bin/", _dir.Combine("cgi"))], TimeSpan.FromSeconds(60)),
        });
    }

    public async Task DisposeAsync()
    {
        await _harness.DisposeAsync();
        _dir.Dispose();
    }

    [Theory]
    [InlineData(Tls13, CipherSuite.TLS_AES_128_GCM_SHA256)]
    [InlineData(Tls13, CipherSuite.TLS_AES_256_GCM_SHA384)]
    [InlineData(Tls13, CipherSuite.TLS_CHACHA20_POLY1305_SHA256)]
    [InlineData(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)]
    [InlineData(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)]
    [InlineData(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)]
    public async Task A_real_client_gets_several_keep_alive_responses(ushort version, int suite)
    {
        using var connection = await OpenAsync(version, suite);
        var buffer = new List<byte>();
        foreach (var (path, body) in new[] { ("/ten.txt", "0123456789"), ("/", "<h1>home</h1>"), ("/ten.txt", "0123456789") })
        {
            await WriteAsync(connection.Stream, $"GET {path} HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
            var response = await HttpResponseParser.ReadAsync(connection.Stream, buffer);
            Assert.Equal(200, response.Status);
            Assert.Equal(body, response.Text);
        }

        // Seen as HTTPS with the handed TLS parameters, in the access log too.
        var access = _harness.Sink.AccessEvents.Last(e => CollectingSink.Scalar(e, "ConnectionId") == connection.Info.ConnectionId.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(version == Tls13 ? "TLSv1.3" : "TLSv1.2", CollectingSink.Scalar(access, "TlsProtocol"));
        Assert.Equal("a.localhost", CollectingSink.Scalar(access, "Sni"));
        Assert.DoesNotContain(_harness.Sink.Events, e => e.Level >= LogEventLevel.Warning);
        output.WriteLine($"{connection.Info.TlsProtocol} {connection.Info.TlsCipher}: 3 responses");

        // The worker cleared the secrets it was handed.
        Assert.All(connection.Info.Session!.ServerSecret, b => Assert.Equal(0, b));
        Assert.All(connection.Info.Session!.ClientSecret, b => Assert.Equal(0, b));
    }

    private async Task<HandedTlsConnection> OpenAsync(
        ushort version,
        int suite,
        HandedProtocol protocol = HandedProtocol.Http1,
        Func<System.Net.Sockets.Socket, Task<byte[]>>? readInitial = null,
        Func<TlsSessionState, TlsSessionState>? alter = null,
        Func<TlsClientProtocol, Task>? beforeHandOff = null) =>
        await HandedTlsConnection.OpenAsync(_harness.Server, version, suite, protocol, Interlocked.Increment(ref _nextId), readInitial, alter, beforeHandOff);

    private static async Task WriteAsync(Stream stream, string text)
    {
        await stream.WriteAsync(Encoding.ASCII.GetBytes(text));
        await stream.FlushAsync();
    }

    private static byte[] CreateBig()
    {
        var big = new byte[10 << 20];
        new Random(7).NextBytes(big);
        return big;
    }
}
