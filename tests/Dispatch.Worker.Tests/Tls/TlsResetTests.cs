using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Dispatch.Wire.Payloads;
using Dispatch.Wire.Tls;
using Dispatch.Worker.Tests.Support;
using Org.BouncyCastle.Tls;
using Serilog.Events;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests.Tls;

/// <summary>
/// Clients that reset a handed TLS connection (SO_LINGER 0: an RST, as a client that closes with a response unread
/// sends too): the connection is closed and counted out, the access log has the requests served and no other, a
/// pipelined request behind a reset is not served (whichever of the connection's input and output sees the reset
/// first: Kestrel goes on to it on an aborted connection, and RequestHandler serves nothing there), and a request whose body was cut off by the reset
/// fails as a reset, not as a truncated body (400). Alone in its collection: the exception count is of the whole test
/// process.
/// </summary>
[Collection(MeasurementCollection.Name)]
public sealed class TlsResetTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TempDir _dir = new();
    private readonly ConcurrentQueue<string> _thrown = new();
    private Harness _harness = null!;
    private long _nextId = 500;
    private volatile bool _counting;

    public async Task InitializeAsync()
    {
        _dir.Write("site/ten.txt", "0123456789");
        _dir.Write("site/big.bin", new byte[64 << 20]);
        var sha = _dir.Write("cgi/sha.sh", "#!/bin/sh\nsum=$(sha256sum | cut -c1-64)\nprintf 'Content-Type: text/plain\\nContent-Length: 64\\n\\n%s' \"$sum\"\n");
        File.SetUnixFileMode(sha, (UnixFileMode)0x1ed);
        _harness = await Harness.StartAsync(Harness.Vhost("a.localhost", _dir.Combine("site")) with
        {
            Cgi = [new CgiRoute("/cgi-bin/", _dir.Combine("cgi"))],
            CgiTimeout = TimeSpan.FromSeconds(60),
        });
        AppDomain.CurrentDomain.FirstChanceException += Count;
    }

    public async Task DisposeAsync()
    {
        AppDomain.CurrentDomain.FirstChanceException -= Count;
        await _harness.DisposeAsync();
        _dir.Dispose();
    }

    [Fact]
    public async Task A_pipelined_request_behind_a_stalled_response_is_not_served_after_a_reset()
    {
        // The reset comes while Kestrel writes the first response (the client reads nothing); the second request is in
        // Kestrel's input, unread. It is not served, as before: Kestrel's input fails with the reset.
        using var connection = await OpenAsync();
        connection.Socket.ReceiveBufferSize = 4096;
        await WriteAsync(connection.Stream, "GET /big.bin HTTP/1.1\r\nHost: a.localhost\r\n\r\nGET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        await Task.Delay(1000); // the first response fills the socket and waits
        Reset(connection.Socket);
        Assert.True(await _harness.WaitForOpenConnectionsAsync(0, TimeSpan.FromSeconds(30)));

        var lines = _harness.Sink.AccessEvents.Where(e => CollectingSink.Scalar(e, "ConnectionId") == Id(connection)).ToList();
        Assert.True(lines.Count == 1, "served: " + string.Join(" | ", lines.Select(e => e.RenderMessage(CultureInfo.InvariantCulture))));
        Assert.Equal("/big.bin", lines[0].Properties["Path"].ToString().Trim('"'));
        Assert.DoesNotContain(_harness.Sink.Events, e => e.Level >= LogEventLevel.Warning);
    }

    [Fact]
    public async Task A_request_body_cut_off_by_a_reset_fails_as_a_reset_not_as_a_truncated_body()
    {
        // Kestrel reads the body (for a CGI script) and has consumed all of it that came: its input must fail with the
        // reset. Ended as after a FIN instead, the body would be "truncated" (BadHttpRequestException), which the CGI
        // handler answers with 400.
        using var connection = await OpenAsync();
        await WriteAsync(connection.Stream, "POST /cgi-bin/sha.sh HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 100000\r\n\r\n0123456789");
        await Task.Delay(1000); // the script runs and waits for the rest of its stdin
        Reset(connection.Socket);
        Assert.True(await _harness.WaitForOpenConnectionsAsync(0, TimeSpan.FromSeconds(30)));
        Assert.True(await WaitForAsync(() => _harness.Sink.AccessEvents.Any(e => CollectingSink.Scalar(e, "ConnectionId") == Id(connection))));

        var line = _harness.Sink.AccessEvents.Single(e => CollectingSink.Scalar(e, "ConnectionId") == Id(connection));
        output.WriteLine(line.RenderMessage(CultureInfo.InvariantCulture));
        Assert.NotEqual("400", CollectingSink.Scalar(line, "Status"));
        Assert.DoesNotContain(_harness.Sink.Events, e => e.RenderMessage(CultureInfo.InvariantCulture).Contains("Unexpected end of request content", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_connection_reset_before_the_worker_takes_it_is_dropped_without_an_exception()
    {
        // The dispatcher hands a descriptor whose client has reset meanwhile (a handshake-only client: the bench's
        // handshake row). The worker's Socket, made from the descriptor, finds no peer; Kestrel took it for a connection
        // never connected and threw twice ending it (its Shutdown, and the reset read). Nothing could be served.
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(System.Net.IPAddress.Loopback, ((System.Net.IPEndPoint)listener.LocalEndpoint).Port);
        using var accepted = await listener.AcceptSocketAsync();
        Reset(client);
        Assert.True(accepted.Poll(TimeSpan.FromSeconds(10), SelectMode.SelectRead)); // the reset has arrived
        var before = _harness.Sink.AccessEvents.Count();

        _thrown.Clear();
        _counting = true;
        var handed = new Socket(new SafeSocketHandle(accepted.Handle, ownsHandle: false));
        Assert.False(handed.Connected);
        Assert.True(_harness.Server.TryEnqueue(handed, ReadOnlyMemory<byte>.Empty, new Dispatch.Worker.Http.HandedConnectionInfo(
            Interlocked.Increment(ref _nextId), null, null, "a.localhost", "TLSv1.3", "TLS_AES_128_GCM_SHA256", Dispatch.Worker.Http.HandedProtocol.Http1)));
        Assert.True(await _harness.WaitForOpenConnectionsAsync(0, TimeSpan.FromSeconds(30)), "the reset connection stayed open");
        await Task.Delay(200); // the connection's last callbacks, had Kestrel taken it
        _counting = false;

        foreach (var t in _thrown)
        {
            output.WriteLine(t);
        }

        Assert.Empty(_thrown);
        Assert.Equal(before, _harness.Sink.AccessEvents.Count());
        Assert.DoesNotContain(_harness.Sink.Events, e => e.Level >= LogEventLevel.Warning);
    }

    private void Count(object? sender, System.Runtime.ExceptionServices.FirstChanceExceptionEventArgs e)
    {
        if (_counting)
        {
            var frames = new StackTrace(1, false).GetFrames().Select(f => f.GetMethod()).Where(m => m is not null).Take(12)
                .Select(m => $"{m!.DeclaringType?.Name}.{m.Name}");
            _thrown.Enqueue($"{e.Exception.GetType().Name}: {e.Exception.Message} at {string.Join(" < ", frames)}");
        }
    }

    private async Task<HandedTlsConnection> OpenAsync() =>
        await HandedTlsConnection.OpenAsync(_harness.Server, TlsSessionState.Tls13, CipherSuite.TLS_AES_128_GCM_SHA256, id: Interlocked.Increment(ref _nextId));

    private async Task<string> ResetAfterOneRequestAsync()
    {
        using var connection = await OpenAsync();
        await WriteAsync(connection.Stream, "GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        var response = await HttpResponseParser.ReadAsync(connection.Stream, []);
        Assert.Equal("0123456789", response.Text);
        Reset(connection.Socket);
        return Id(connection);
    }

    private async Task HandshakeThenResetAsync()
    {
        using var connection = await OpenAsync();
        Reset(connection.Socket);
    }

    private static void Reset(Socket socket)
    {
        socket.LingerState = new LingerOption(true, 0);
        socket.Close();
    }

    private static string Id(HandedTlsConnection connection) => connection.Info.ConnectionId.ToString(CultureInfo.InvariantCulture);

    private static async Task WriteAsync(Stream stream, string text)
    {
        await stream.WriteAsync(Encoding.ASCII.GetBytes(text));
        await stream.FlushAsync();
    }

    private static async Task<bool> WaitForAsync(Func<bool> condition)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(30))
        {
            if (condition())
            {
                return true;
            }

            await Task.Delay(50);
        }

        return condition();
    }
}
