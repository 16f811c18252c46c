using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests;

/// <summary>Handing sockets over with bytes already read, HTTP/2, concurrency, connection accounting, stop.</summary>
public sealed class HandoverTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TempDir _dir = new();
    private Harness _harness = null!;

    public async Task InitializeAsync()
    {
        _dir.Write("site/index.html", "<h1>home</h1>");
        _dir.Write("site/ten.txt", "0123456789");
        _dir.Write("site/big.bin", Enumerable.Range(0, 300_000).Select(i => (byte)(i * 7)).ToArray());
        _harness = await Harness.StartAsync(Harness.Vhost("a.localhost", _dir.Combine("site")));
    }

    public async Task DisposeAsync()
    {
        if (!_harness.Dispatcher.Errors.IsEmpty)
        {
            output.WriteLine("dispatcher errors: " + string.Join("; ", _harness.Dispatcher.Errors));
        }

        await _harness.DisposeAsync();
        _dir.Dispose();
    }

    [Fact]
    public async Task Initial_bytes_hold_the_whole_request()
    {
        _harness.Dispatcher.ReadInitial = InitialRead.Head;
        using var client = _harness.CreateClient();
        using var response = await client.GetAsync(new Uri("http://a.localhost/ten.txt"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("0123456789", await response.Content.ReadAsStringAsync());

        // Further requests on the same (kept-alive) connection come from the socket alone.
        using var second = await client.GetAsync(new Uri("http://a.localhost/"));
        Assert.Equal("<h1>home</h1>", await second.Content.ReadAsStringAsync());
        Assert.Single(_harness.Dispatcher.Handed);
    }

    [Fact]
    public async Task Initial_bytes_hold_part_of_the_head()
    {
        const string request = "GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\nX-Long: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        _harness.Dispatcher.ReadInitial = InitialRead.Exactly(20);
        await using var raw = await RawConnection.ConnectAsync(_harness.Port);
        await raw.SendAsync(request[..20]);
        await Task.Delay(100);
        await raw.SendAsync(request[20..]);
        var response = await raw.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal("0123456789", response.Text);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(38)]
    [InlineData(39)]
    [InlineData(40)]
    public async Task Head_split_at_every_kind_of_place(int split)
    {
        // 40 bytes: split inside the request line, inside CRLF, right before and after the final CRLF.
        const string request = "GET /ten.txt HTTP/1.1\r\nHost:a.localhost\r\n\r\n";
        _harness.Dispatcher.ReadInitial = InitialRead.Exactly(Math.Min(split, request.Length));
        await using var raw = await RawConnection.ConnectAsync(_harness.Port);
        await raw.SendAsync(request[..Math.Min(split, request.Length)]);
        await Task.Delay(50);
        if (split < request.Length)
        {
            await raw.SendAsync(request[split..]);
        }

        var response = await raw.ReadResponseAsync();
        Assert.Equal("0123456789", response.Text);
    }

    [Fact]
    public async Task Initial_bytes_hold_the_head_and_part_of_the_body()
    {
        var body = new string('b', 100);
        var head = $"POST /ten.txt HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: {body.Length}\r\n\r\n";
        var firstPart = head + body[..40];
        _harness.Dispatcher.ReadInitial = InitialRead.Exactly(firstPart.Length);
        await using var raw = await RawConnection.ConnectAsync(_harness.Port);
        await raw.SendAsync(firstPart);
        await Task.Delay(100);

        // The rest of the body, then a second request: it is answered only if exactly 100 body bytes were consumed.
        await raw.SendAsync(body[40..] + "GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        var post = await raw.ReadResponseAsync();
        Assert.Equal(405, post.Status);
        var get = await raw.ReadResponseAsync();
        Assert.Equal(200, get.Status);
        Assert.Equal("0123456789", get.Text);
    }

    [Fact]
    public async Task Pipelined_requests_in_the_initial_bytes_are_all_answered()
    {
        const string requests =
            "GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n" +
            "HEAD /index.html HTTP/1.1\r\nHost: a.localhost\r\n\r\n" +
            "GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n";
        _harness.Dispatcher.ReadInitial = InitialRead.Exactly(requests.Length);
        await using var raw = await RawConnection.ConnectAsync(_harness.Port);
        await raw.SendAsync(requests);
        Assert.Equal("0123456789", (await raw.ReadResponseAsync()).Text);
        var head = await raw.ReadResponseAsync(head: true);
        Assert.Equal(200, head.Status);
        Assert.Equal("<h1>home</h1>", (await raw.ReadResponseAsync()).Text);

        // And the connection continues with socket data.
        await raw.SendAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("0123456789", (await raw.ReadResponseAsync()).Text);
    }

    [Fact]
    public async Task Large_response_after_replayed_request()
    {
        _harness.Dispatcher.ReadInitial = InitialRead.Head;
        using var client = _harness.CreateClient();
        var bytes = await client.GetByteArrayAsync(new Uri("http://a.localhost/big.bin"));
        Assert.Equal(await File.ReadAllBytesAsync(_dir.Combine("site/big.bin")), bytes);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Http2_prior_knowledge_with_HttpClient(bool prefaceAlreadyRead)
    {
        _harness.Dispatcher.Protocol = HandedProtocol.Http2;
        _harness.Dispatcher.Sni = "h2-test";
        if (prefaceAlreadyRead)
        {
            _harness.Dispatcher.ReadInitial = InitialRead.Exactly(24); // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        }

        using var client = _harness.CreateClient(HttpVersion.Version20);
        using var response = await client.GetAsync(new Uri("http://a.localhost/ten.txt"));
        Assert.Equal(HttpVersion.Version20, response.Version);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("0123456789", await response.Content.ReadAsStringAsync());
        Assert.Equal("nosniff", Assert.Single(response.Headers.GetValues("X-Content-Type-Options")));

        // Several streams on the one connection, and :authority picks the vhost.
        var many = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => client.GetStringAsync(new Uri("http://a.localhost/"))));
        Assert.All(many, body => Assert.Equal("<h1>home</h1>", body));
        Assert.Single(_harness.Dispatcher.Handed);

        // A file of many chunks, whole and by range, several at once on the connection (each chunk read straight
        // into its stream's pipe).
        var big = await File.ReadAllBytesAsync(_dir.Combine("site/big.bin"));
        var downloads = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => client.GetByteArrayAsync(new Uri("http://a.localhost/big.bin"))));
        Assert.All(downloads, bytes => Assert.Equal(big, bytes));
        using (var ranged = new HttpRequestMessage(HttpMethod.Get, new Uri("http://a.localhost/big.bin")) { Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact })
        {
            ranged.Headers.Range = new System.Net.Http.Headers.RangeHeaderValue(StaticFileBody.Chunk - 3, (3L * StaticFileBody.Chunk) + 5);
            using var partial = await client.SendAsync(ranged);
            Assert.Equal(HttpStatusCode.PartialContent, partial.StatusCode);
            Assert.Equal(big[(StaticFileBody.Chunk - 3)..((3 * StaticFileBody.Chunk) + 6)], await partial.Content.ReadAsByteArrayAsync());
        }

        Assert.Single(_harness.Dispatcher.Handed);

        // (SocketsHttpHandler retries a 421 once on a new connection, hence no connection count after this.)
        using var misdirected = await client.GetAsync(new Uri("http://other.localhost/"));
        Assert.Equal(HttpStatusCode.MisdirectedRequest, misdirected.StatusCode);

        var logged = _harness.Sink.AccessEvents.First(e => CollectingSink.Scalar(e, "Path") == "/ten.txt");
        Assert.Equal("HTTP/2", CollectingSink.Scalar(logged, "Protocol"));
        Assert.Equal("h2-test", CollectingSink.Scalar(logged, "Sni"));
    }

    [Fact]
    public async Task Fifty_concurrent_connections_are_served_and_accounted()
    {
        _harness.Dispatcher.ReadInitial = InitialRead.Head;
        var connections = await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => RawConnection.ConnectAsync(_harness.Port)));
        try
        {
            var responses = await Task.WhenAll(connections.Select(async (c, i) =>
            {
                await c.SendAsync($"GET /ten.txt?{i} HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
                return await c.ReadResponseAsync();
            }));
            Assert.All(responses, r => Assert.Equal("0123456789", r.Text));

            // All kept alive: 50 open.
            Assert.True(await _harness.WaitForOpenConnectionsAsync(50, TimeSpan.FromSeconds(5)), $"open: {_harness.Server.OpenConnections}");
        }
        finally
        {
            foreach (var c in connections)
            {
                await c.DisposeAsync();
            }
        }

        Assert.True(await _harness.WaitForOpenConnectionsAsync(0, TimeSpan.FromSeconds(10)), $"open: {_harness.Server.OpenConnections}");
        Assert.Equal(50, _harness.Dispatcher.Handed.Count);
    }

    [Fact]
    public async Task Fifty_concurrent_HttpClient_connections()
    {
        var clients = Enumerable.Range(0, 50).Select(_ => _harness.CreateClient()).ToArray();
        try
        {
            var bodies = await Task.WhenAll(clients.Select(c => c.GetStringAsync(new Uri("http://a.localhost/ten.txt"))));
            Assert.All(bodies, b => Assert.Equal("0123456789", b));
        }
        finally
        {
            foreach (var c in clients)
            {
                c.Dispose();
            }
        }

        Assert.True(await _harness.WaitForOpenConnectionsAsync(0, TimeSpan.FromSeconds(10)), $"open: {_harness.Server.OpenConnections}");
    }

    [Fact]
    public async Task Unix_socketpair_as_for_tls_terminated_by_the_dispatcher()
    {
        var (serverSide, clientSide) = SocketPair();
        using var client = clientSide;
        const string request = "GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n";
        var info = new HandedConnectionInfo(77, new IPEndPoint(IPAddress.Parse("198.51.100.9"), 50123), new IPEndPoint(IPAddress.Parse("192.0.2.1"), 443), "a.localhost", "Tls13", "TLS_AES_128_GCM_SHA256", HandedProtocol.Http1);
        Assert.True(_harness.Server.TryEnqueue(serverSide, Encoding.ASCII.GetBytes(request), info));

        var response = new byte[4096];
        var received = 0;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (!Encoding.ASCII.GetString(response, 0, received).EndsWith("0123456789", StringComparison.Ordinal))
        {
            var n = await client.ReceiveAsync(response.AsMemory(received), SocketFlags.None, timeout.Token);
            Assert.NotEqual(0, n);
            received += n;
        }

        Assert.StartsWith("HTTP/1.1 200 OK", Encoding.ASCII.GetString(response, 0, received), StringComparison.Ordinal);
        // The access line is written as the request ends, which may be just after the client has the last byte.
        Assert.True(SpinWait.SpinUntil(() => _harness.Sink.AccessEvents.Any(e => CollectingSink.Scalar(e, "ConnectionId") == "77"), TimeSpan.FromSeconds(10)), "no access line");
        var logged = _harness.Sink.AccessEvents.Single(e => CollectingSink.Scalar(e, "ConnectionId") == "77");
        Assert.Equal("198.51.100.9", CollectingSink.Scalar(logged, "ClientAddress"));
        client.Shutdown(SocketShutdown.Both);
        Assert.True(await _harness.WaitForOpenConnectionsAsync(0, TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task A_socket_whose_client_already_left_is_dropped_cleanly()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        try
        {
            var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await client.ConnectAsync((IPEndPoint)listener.LocalEndpoint);
            var server = await listener.AcceptSocketAsync();
            client.LingerState = new LingerOption(true, 0);
            client.Dispose(); // RST
            await Task.Delay(50);
            Assert.True(_harness.Server.TryEnqueue(server, Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n"), new HandedConnectionInfo(1, null, null, null, null, null, HandedProtocol.Http1)));
            Assert.True(await _harness.WaitForOpenConnectionsAsync(0, TimeSpan.FromSeconds(5)));
        }
        finally
        {
            listener.Stop();
        }
    }

    private static unsafe (Socket, Socket) SocketPair()
    {
        const int AF_UNIX = 1;
        const int SOCK_STREAM = 1;
        const int SOCK_CLOEXEC = 0x80000;
        var fds = stackalloc int[2];
        Assert.Equal(0, Dispatch.Platform.Interop.Libc.SocketPair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
        return (new Socket(new SafeSocketHandle(fds[0], ownsHandle: true)), new Socket(new SafeSocketHandle(fds[1], ownsHandle: true)));
    }

    [Fact]
    public async Task Stop_lets_a_slow_download_finish_closes_idle_connections_and_refuses_new_ones()
    {
        const int size = 8 << 20;
        _dir.Write("site/huge.bin", new byte[size]);
        await using var idle = await RawConnection.ConnectAsync(_harness.Port);
        await idle.SendAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal(200, (await idle.ReadResponseAsync()).Status);

        // A download the client does not read yet: Kestrel is stuck writing it when the stop begins.
        await using var busy = await RawConnection.ConnectAsync(_harness.Port, receiveBufferSize: 4096);
        await busy.SendAsync("GET /huge.bin HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.True(await _harness.WaitForOpenConnectionsAsync(2, TimeSpan.FromSeconds(5)));
        await Task.Delay(200);

        var watch = Stopwatch.StartNew();
        var stop = _harness.Server.StopAsync(TimeSpan.FromSeconds(20));
        Assert.True(await idle.IsClosedByServerAsync(TimeSpan.FromSeconds(5)), "idle keep-alive connection not closed");
        Assert.False(stop.IsCompleted);
        var response = await busy.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        Assert.Equal(size, response.Body.Length);
        await stop;
        output.WriteLine($"graceful stop with a download in flight took {watch.Elapsed.TotalMilliseconds:0} ms");
        Assert.True(await _harness.WaitForOpenConnectionsAsync(0, TimeSpan.FromSeconds(5)));

        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        Assert.False(_harness.Server.TryEnqueue(socket, default, new HandedConnectionInfo(9, null, null, null, null, null, HandedProtocol.Http1)));
    }

    [Fact]
    public async Task Stop_aborts_what_is_left_after_the_grace_period()
    {
        const int size = 8 << 20;
        _dir.Write("site/huge.bin", new byte[size]);
        await using var busy = await RawConnection.ConnectAsync(_harness.Port, receiveBufferSize: 4096);
        await busy.SendAsync("GET /huge.bin HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.True(await _harness.WaitForOpenConnectionsAsync(1, TimeSpan.FromSeconds(5)));
        await Task.Delay(200);
        var watch = Stopwatch.StartNew();
        await _harness.Server.StopAsync(TimeSpan.FromMilliseconds(300));
        output.WriteLine($"stop with 300 ms grace took {watch.Elapsed.TotalMilliseconds:0} ms");
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5));
        var received = await busy.DrainAsync(TimeSpan.FromSeconds(10));
        Assert.True(received < size, $"received {received}");
        Assert.True(await _harness.WaitForOpenConnectionsAsync(0, TimeSpan.FromSeconds(5)));
    }

    /// <summary>
    /// The dispatcher may hand a stopping worker connections until it hears of the stop: each is refused (the caller
    /// closes it), and the line about it comes within the worker's budget of lines about single connections, the rest
    /// counted. Each refusal was a line of its own, a flood of them while a busy worker stopped.
    /// </summary>
    [Fact]
    public async Task Connections_handed_to_a_stopping_server_are_refused_and_logged_within_the_budget()
    {
        var (harness, budget) = await Harness.StartWithLogBudgetAsync(2, Harness.Vhost("a.localhost", _dir.Combine("site")));
        await using (harness)
        {
            await harness.Server.StopAsync(TimeSpan.Zero);
            for (var i = 0; i < 5; i++)
            {
                using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                Assert.False(harness.Server.TryEnqueue(socket, default, new HandedConnectionInfo(100 + i, null, null, null, null, null, HandedProtocol.Http1)));
            }

            Assert.Equal(3, budget.NotLogged);
            Assert.Equal(
                [100L, 101L],
                harness.Sink.Events.Where(e => e.MessageTemplate.Text == "Connection {ConnectionId} refused: the server is stopping")
                    .Select(e => (long)((Serilog.Events.ScalarValue)e.Properties["ConnectionId"]).Value!).ToList());
        }

        harness.AssertNotLoggedReport(3);
    }
}
