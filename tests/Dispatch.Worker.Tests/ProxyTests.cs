using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;
using Serilog.Events;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests;

/// <summary>The reverse proxy against real applications (Kestrel on a Unix socket and on 127.0.0.1) and hand-written ones.</summary>
public sealed class ProxyTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const string ProxySource = "Dispatch.Worker.Http.Proxy";
    private readonly TempDir _dir = new();
    private EchoUpstream _unix = null!;
    private EchoUpstream _tcp = null!;
    private RawUpstream _raw = null!;
    private Socket _boundOnly = null!;
    private Socket _closedTcp = null!;
    private Harness _harness = null!;
    private HttpClient _client = null!;

    private string Dead => _dir.Combine("dead.sock");

    private string Missing => _dir.Combine("missing.sock");

    public async Task InitializeAsync()
    {
        _dir.Write("site/index.html", "static home");
        _unix = await EchoUpstream.StartUnixAsync(_dir.Combine("app.sock"));
        _tcp = await EchoUpstream.StartTcpAsync();
        _raw = new RawUpstream(_dir.Combine("raw.sock"));

        // A socket file with nothing listening on it (the application stopped without removing it): bound, never listening.
        _boundOnly = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _boundOnly.Bind(new UnixDomainSocketEndPoint(Dead));

        // A loopback port with nothing listening: bound (so nobody else takes it), never listening.
        _closedTcp = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _closedTcp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var closedPort = ((IPEndPoint)_closedTcp.LocalEndPoint!).Port;

        var root = _dir.Combine("site");
        _harness = await Harness.StartAsync(
            Harness.Vhost("u.localhost", root) with { Proxy = [Harness.Proxy("/", _unix.Upstream)] },
            Harness.Vhost("t.localhost", root) with { Proxy = [Harness.Proxy("/", _tcp.Upstream)] },
            Harness.Vhost("m.localhost", root) with
            {
                Proxy = [Harness.Proxy("/app", _unix.Upstream), Harness.Proxy("/app/deep/", _tcp.Upstream)],
            },
            Harness.Vhost("raw.localhost", root) with { Proxy = [Harness.Proxy("/", _raw.Upstream)] },

            // The one vhost with a short read timeout: only the test of that timeout uses it (under load, 1 s of
            // silence can happen in any other test).
            Harness.Vhost("rawslow.localhost", root) with
            {
                Proxy = [Harness.Proxy("/", _raw.Upstream, read: TimeSpan.FromSeconds(1))],
            },
            Harness.Vhost("dead.localhost", root) with { Proxy = [Harness.Proxy("/", "unix:" + Dead)] },
            Harness.Vhost("gone.localhost", root) with { Proxy = [Harness.Proxy("/", "unix:" + Missing)] },
            Harness.Vhost("closed.localhost", root) with
            {
                Proxy = [Harness.Proxy("/", $"http://127.0.0.1:{closedPort}")],
            });
        _client = _harness.CreateClient();
    }

    public async Task DisposeAsync()
    {
        var problems = _harness.Sink.DumpProblems();
        if (problems.Length > 0)
        {
            output.WriteLine("Warnings logged:" + Environment.NewLine + problems);
        }

        _client.Dispose();
        await _harness.DisposeAsync();
        await _unix.DisposeAsync();
        await _tcp.DisposeAsync();
        await _raw.DisposeAsync();
        _boundOnly.Dispose();
        _closedTcp.Dispose();
        _dir.Dispose();
        Assert.DoesNotContain(_harness.Sink.Events, e => e.Level >= LogEventLevel.Error);
    }

    [Fact]
    public async Task Get_over_a_unix_socket_and_over_loopback_tcp()
    {
        foreach (var (host, upstream) in new[] { ("u.localhost", "unix"), ("t.localhost", "tcp") })
        {
            using var response = await _client.GetAsync(new Uri($"http://{host}/hello/world?x=1&y=two"));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(upstream, Assert.Single(response.Headers.GetValues("X-Upstream")));
            Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
            var echo = EchoResult.Parse(await response.Content.ReadAsStringAsync());
            Assert.Equal("GET", echo.Method);
            Assert.Equal("/hello/world?x=1&y=two", echo.Target);
            Assert.Equal("HTTP/1.1", echo.Protocol);
            Assert.Equal(host, echo.Header("Host"));
            Assert.Equal("127.0.0.1", echo.Header("X-Forwarded-For"));
            Assert.Equal("http", echo.Header("X-Forwarded-Proto"));
            Assert.Equal(host, echo.Header("X-Forwarded-Host"));
            Assert.Equal(0, echo.Length);
            Assert.Null(echo.Header("traceparent"));
        }

        Assert.Equal(1, _unix.Requests);
        Assert.Equal(1, _tcp.Requests);
        Assert.Empty(ProxyWarnings());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Ten_MiB_post_is_streamed_to_the_application(bool withContentLength)
    {
        var data = new byte[10 * 1024 * 1024];
        new Random(1234).NextBytes(data);

        // The second half is sent only once the application has received part of the first: a proxy that buffered the
        // body before sending it on would never get there.
        using var content = new GatedContent(data, withContentLength, () => _unix.BodyBytes >= 1024 * 1024);
        using var response = await _client.PostAsync(new Uri("http://u.localhost/upload?name=big.bin"), content);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, text);
        var echo = EchoResult.Parse(text);
        Assert.Equal("POST", echo.Method);
        Assert.Equal(data.Length, echo.Length);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)), echo.Sha256);
        Assert.Equal(withContentLength ? data.Length.ToString(CultureInfo.InvariantCulture) : null, echo.Header("Content-Length"));
        Assert.Equal(withContentLength ? null : "chunked", echo.Header("Transfer-Encoding"));
        Assert.Equal("application/octet-stream", echo.Header("Content-Type"));
    }

    [Fact]
    public async Task An_empty_post_reaches_the_application_with_content_length_zero()
    {
        var response = await RawConnection.RequestAsync(
            _harness.Port, "POST /empty HTTP/1.1\r\nHost: u.localhost\r\nContent-Length: 0\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n");
        Assert.Equal(200, response.Status);
        var echo = EchoResult.Parse(response.Text);
        Assert.Equal("POST", echo.Method);
        Assert.Equal("0", echo.Header("Content-Length"));
        Assert.Equal("text/plain", echo.Header("Content-Type"));
        Assert.Equal(0, echo.Length);
    }

    [Theory]
    [InlineData("/a%2Fb/c%20d/?q=a%20b&x=%2F&plus=1+2")]
    [InlineData("/%C3%A9t%C3%A9/%E2%9C%93.txt?u=%F0%9F%98%80&e=%c3%a9")]
    [InlineData("/odd;p=1/%7Euser/'quote'/(x)/*/!$&,=@:?a=b=c&&&a[]=1")]
    [InlineData("/%25%32%46/%2e%2E/x?%00=%ff")]
    [InlineData("//double//slashes/?")]
    public async Task The_request_target_reaches_the_application_exactly_as_sent(string target)
    {
        var response = await RawConnection.RequestAsync(_harness.Port, $"GET {target} HTTP/1.1\r\nHost: u.localhost\r\nConnection: close\r\n\r\n");
        Assert.True(response.Status == 200, response.StatusLine + " " + response.Text);
        Assert.Equal(target, EchoResult.Parse(response.Text).Target);
    }

    [Fact]
    public async Task An_absolute_form_target_reaches_the_application_in_origin_form()
    {
        var response = await RawConnection.RequestAsync(
            _harness.Port, "GET http://u.localhost/abs/p%20q?x=%2F HTTP/1.1\r\nHost: u.localhost\r\nConnection: close\r\n\r\n");
        Assert.Equal(200, response.Status);
        Assert.Equal("/abs/p%20q?x=%2F", EchoResult.Parse(response.Text).Target);
    }

    [Fact]
    public async Task Longest_prefix_wins_and_the_rest_is_served_statically()
    {
        async Task<string?> UpstreamOf(string path)
        {
            using var response = await _client.GetAsync(new Uri("http://m.localhost" + path));
            return response.Headers.TryGetValues("X-Upstream", out var values) ? values.Single() : $"static {(int)response.StatusCode}";
        }

        Assert.Equal("unix", await UpstreamOf("/app/x?y"));
        Assert.Equal("unix", await UpstreamOf("/app"));
        Assert.Equal("unix", await UpstreamOf("/app/"));
        Assert.Equal("unix", await UpstreamOf("/app/deeper"));
        Assert.Equal("tcp", await UpstreamOf("/app/deep/x"));
        Assert.Equal("tcp", await UpstreamOf("/app/deep/"));
        Assert.Equal("static 200", await UpstreamOf("/"));
        Assert.Equal("static 404", await UpstreamOf("/apple"));
        Assert.Equal("static 404", await UpstreamOf("/APP/x"));
    }

    [Fact]
    public async Task Hop_by_hop_request_fields_are_not_forwarded()
    {
        var response = await RawConnection.RequestAsync(
            _harness.Port,
            "POST /hop HTTP/1.1\r\nHost: u.localhost\r\n"
            + "Connection: keep-alive, X-Client-Private, Upgrade, HTTP2-Settings\r\n"
            + "X-Client-Private: secret\r\n"
            + "Keep-Alive: timeout=5\r\n"
            + "Proxy-Connection: keep-alive\r\n"
            + "TE: trailers\r\n"
            + "Trailer: X-Checksum\r\n"
            + "Upgrade: h2c\r\n"
            + "HTTP2-Settings: AAMAAABkAAQAAP__\r\n"
            + "Proxy: http://evil.example:3128\r\n"
            + "Expect: 100-continue\r\n"
            + "X-Kept: kept\r\n"
            + "Cookie: a=1\r\n"
            + "Transfer-Encoding: chunked\r\n\r\n"
            + "5\r\nhello\r\n0\r\n\r\n");
        Assert.True(response.Status == 200, response.StatusLine + " " + response.Text);
        var echo = EchoResult.Parse(response.Text);
        foreach (var name in new[] { "X-Client-Private", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Upgrade", "HTTP2-Settings", "Proxy", "Expect" })
        {
            Assert.True(echo.Header(name) is null, $"{name} was forwarded: {echo.Header(name)}");
        }

        // The upstream hop has its own framing (our chunked body) and no Connection field.
        Assert.Null(echo.Header("Connection"));
        Assert.Equal("kept", echo.Header("X-Kept"));
        Assert.Equal("a=1", echo.Header("Cookie"));
        Assert.Equal(5, echo.Length);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData("hello"u8)), echo.Sha256);
    }

    [Fact]
    public async Task Hop_by_hop_response_fields_are_not_passed_back()
    {
        _raw.Behaviour = (socket, _, ct) => RawUpstream.Respond(
            socket,
            "HTTP/1.1 201 Made Here\r\n"
            + "Content-Length: 2\r\n"
            + "Connection: keep-alive, X-Up-Private\r\n"
            + "X-Up-Private: secret\r\n"
            + "Keep-Alive: timeout=5, max=100\r\n"
            + "Proxy-Connection: keep-alive\r\n"
            + "Trailer: X-Checksum\r\n"
            + "Upgrade: foo/2\r\n"
            + "X-Up-Public: public\r\n"
            + "Set-Cookie: a=1\r\n"
            + "Set-Cookie: b=2\r\n"
            + "X-Content-Type-Options: from-app\r\n\r\nok",
            ct);
        await using var connection = await RawConnection.ConnectAsync(_harness.Port);
        await connection.SendAsync("GET /r HTTP/1.1\r\nHost: raw.localhost\r\n\r\n");
        var response = await connection.ReadResponseAsync();
        Assert.Equal("HTTP/1.1 201 Made Here", response.StatusLine);
        Assert.Equal("ok", response.Text);
        Assert.Equal("public", response.Header("X-Up-Public"));
        Assert.Equal("a=1, b=2", response.Header("Set-Cookie"));
        Assert.Equal("from-app", response.Header("X-Content-Type-Options"));
        foreach (var name in new[] { "X-Up-Private", "Keep-Alive", "Proxy-Connection", "Trailer", "Upgrade", "Connection", "Transfer-Encoding" })
        {
            Assert.True(response.Header(name) is null, $"{name} was passed back: {response.Header(name)}");
        }

        // The client's connection is still usable (no Connection field of the application's leaked into ours).
        await connection.SendAsync("GET /again HTTP/1.1\r\nHost: raw.localhost\r\n\r\n");
        Assert.Equal(201, (await connection.ReadResponseAsync()).Status);
    }

    [Fact]
    public async Task Forwarded_fields_name_the_client_the_scheme_and_the_host()
    {
        _harness.Dispatcher.TlsProtocol = "TLSv1.3";
        _harness.Dispatcher.ClientOverride = new IPEndPoint(IPAddress.Parse("203.0.113.9"), 4444);
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri("http://u.localhost:8443/fwd"));
        request.Headers.Add("X-Forwarded-For", "198.51.100.1");
        request.Headers.Add("X-Forwarded-Proto", "gopher");
        request.Headers.Add("X-Forwarded-Host", "evil.example");
        using var response = await _client.SendAsync(request);
        var echo = EchoResult.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("198.51.100.1, 203.0.113.9", echo.Header("X-Forwarded-For"));
        Assert.Equal("https", echo.Header("X-Forwarded-Proto"));
        Assert.Equal("u.localhost:8443", echo.Header("X-Forwarded-Host"));
        Assert.Equal("u.localhost:8443", echo.Header("Host"));

        _harness.Dispatcher.ClientOverride = new IPEndPoint(IPAddress.Parse("2001:db8::5"), 4444);
        _harness.Dispatcher.TlsProtocol = null;
        using var second = _harness.CreateClient();
        echo = EchoResult.Parse(await second.GetStringAsync(new Uri("http://u.localhost/fwd")));
        Assert.Equal("2001:db8::5", echo.Header("X-Forwarded-For"));
        Assert.Equal("http", echo.Header("X-Forwarded-Proto"));
    }

    [Fact]
    public async Task A_chunked_response_is_streamed_as_it_comes()
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri("http://u.localhost/stream"));
        request.Headers.Add("X-Mode", "chunked");
        using var response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(response.Headers.TransferEncodingChunked);
        await using var stream = await response.Content.ReadAsStreamAsync();

        // The first chunk arrives while the application is still waiting to write the second.
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var received = new MemoryStream();
        var buffer = new byte[256];
        while (!Encoding.ASCII.GetString(received.ToArray()).Contains("first-chunk\n", StringComparison.Ordinal))
        {
            var n = await stream.ReadAsync(buffer, timeout.Token);
            Assert.True(n > 0, "the response ended before the first chunk");
            received.Write(buffer, 0, n);
        }

        Assert.False(_unix.Finished.Task.IsCompleted);
        _unix.ReleaseChunk.SetResult();
        await stream.CopyToAsync(received, timeout.Token);
        Assert.Equal("first-chunk\nsecond-chunk\n", Encoding.ASCII.GetString(received.ToArray()));
    }

    [Fact]
    public async Task Head_keeps_the_applications_content_length()
    {
        using var request = new HttpRequestMessage(HttpMethod.Head, new Uri("http://u.localhost/head"));
        using var response = await _client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(response.Content.Headers.ContentLength > 0);
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
    }

    [Theory]
    [InlineData("dead.localhost", "refused")]
    [InlineData("closed.localhost", "refused")]
    [InlineData("gone.localhost", "not running")]
    public async Task A_stopped_application_is_502_at_once(string host, string reason)
    {
        using var response = await _client.GetAsync(new Uri($"http://{host}/x"));
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.Contains("unavailable", text, StringComparison.Ordinal);
        // A refused connection is an answer, not a wait for the 5 s connect timeout: the reason says which (a timeout
        // is a 504 "did not accept the connection in time"), no stopwatch needed.
        Assert.Contains(reason, text, StringComparison.Ordinal);
        var warning = Assert.Single(ProxyWarnings());
        Assert.Equal(host, CollectingSink.Scalar(warning, "Vhost"));
        Assert.NotNull(CollectingSink.Scalar(warning, "Upstream"));
        Assert.DoesNotContain(_dir.Path, text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_application_that_never_answers_is_504_after_the_response_timeout()
    {
        _raw.Behaviour = _raw.Hang;
        var watch = Stopwatch.StartNew();
        using var response = await _client.GetAsync(new Uri("http://rawslow.localhost/slow"));
        var elapsed = watch.Elapsed;
        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
        Assert.Contains("did not answer in time", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);

        // Not before the timeout (how long after it depends on the machine's load: not asserted).
        Assert.True(elapsed >= TimeSpan.FromSeconds(0.9), $"took {elapsed}");

        // The abandoned upstream request is not left open.
        await _raw.PeerClosed.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("rawslow.localhost", CollectingSink.Scalar(Assert.Single(ProxyWarnings()), "Vhost"));
    }

    [Fact]
    public async Task A_connect_timeout_is_504()
    {
        // A listener whose accept queue is full: Linux drops further SYNs, so a connect waits.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(0);
        var endPoint = (IPEndPoint)listener.LocalEndPoint!;
        var fillers = new List<Socket>();
        try
        {
            // Fill it, without guessing from how long a connect takes (a loaded machine is slow either way): each
            // connect to a queue with room completes; stop once the kernel shows the queue beyond its backlog.
            while (!AcceptQueueFull(endPoint.Port))
            {
                Assert.True(fillers.Count < 16, "the accept queue never filled");
                var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                fillers.Add(filler);
                await filler.ConnectAsync(endPoint);
            }

            await using var harness = await Harness.StartAsync(Harness.Vhost("slow.localhost", _dir.Combine("site")) with
            {
                Proxy = [Harness.Proxy("/", $"http://127.0.0.1:{endPoint.Port}", connect: TimeSpan.FromSeconds(1))],
            });
            using var client = harness.CreateClient();
            var watch = Stopwatch.StartNew();
            using var response = await client.GetAsync(new Uri("http://slow.localhost/"));
            Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
            Assert.Contains("did not accept the connection in time", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            Assert.True(watch.Elapsed >= TimeSpan.FromSeconds(0.9), $"took {watch.Elapsed}");
            Assert.Single(harness.Sink.Events, e => e.Level == LogEventLevel.Warning);
        }
        finally
        {
            fillers.ForEach(s => s.Dispose());
        }
    }

    /// <summary>
    /// Whether the listening TCP socket on 127.0.0.1:<paramref name="port"/> has more connections waiting than its
    /// backlog (then Linux drops further SYNs). /proc/net/tcp shows a listener's queue length as rx_queue and its
    /// backlog as tx_queue.
    /// </summary>
    private static bool AcceptQueueFull(int port)
    {
        var local = $"0100007F:{port:X4}";
        foreach (var line in File.ReadLines("/proc/net/tcp").Skip(1))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f[1] != local || f[3] != "0A")
                continue;
            var queues = f[4].Split(':');
            return int.Parse(queues[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture) > int.Parse(queues[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
        }

        throw new InvalidOperationException($"no listener on 127.0.0.1:{port} in /proc/net/tcp");
    }

    [Fact]
    public async Task A_unix_socket_with_a_full_backlog_is_retried_until_the_connect_timeout()
    {
        // Unlike TCP, a Unix socket whose accept queue is full refuses a non-blocking connect with EAGAIN at once.
        var path = _dir.Combine("busy.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(0);
        var fillers = new List<Socket>();
        try
        {
            while (true)
            {
                // No guess from how long a connect takes: one to a queue with room completes, one to a full queue fails.
                Assert.True(fillers.Count < 16, "the accept queue never filled");
                var filler = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                fillers.Add(filler);
                try
                {
                    await filler.ConnectAsync(new UnixDomainSocketEndPoint(path));
                }
                catch (SocketException e)
                {
                    output.WriteLine($"queue full after {fillers.Count - 1}: {e.Message}");
                    break;
                }
            }

            await using var harness = await Harness.StartAsync(Harness.Vhost("busy.localhost", _dir.Combine("site")) with
            {
                Proxy = [Harness.Proxy("/", "unix:" + path, connect: TimeSpan.FromSeconds(1))],
            });
            using var client = harness.CreateClient();
            var watch = Stopwatch.StartNew();
            using var response = await client.GetAsync(new Uri("http://busy.localhost/"));
            output.WriteLine(harness.Sink.DumpProblems());
            Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
            Assert.True(watch.Elapsed >= TimeSpan.FromSeconds(0.9), $"took {watch.Elapsed}");
            Assert.Contains("backlog", Assert.Single(harness.Sink.Events, e => e.Level == LogEventLevel.Warning).RenderMessage(), StringComparison.Ordinal);
        }
        finally
        {
            fillers.ForEach(s => s.Dispose());
        }
    }

    [Fact]
    public async Task Raw_utf8_in_the_target_is_refused_before_the_application()
    {
        await using var connection = await RawConnection.ConnectAsync(_harness.Port);
        await connection.SendAsync(Encoding.UTF8.GetBytes("GET /caf\u00e9/\u2713 HTTP/1.1\r\nHost: u.localhost\r\nConnection: close\r\n\r\n"));
        Assert.Equal(400, (await connection.ReadResponseAsync()).Status); // Kestrel's own refusal
        Assert.Equal(0, _unix.Requests);
    }

    [Fact]
    public async Task A_slow_upload_restarts_the_response_timeout_with_each_chunk()
    {
        // ResponseTimeout 3 s, an upload taking at least 3.6 s: the wait for the response starts after the last chunk.
        // A chunk every 300 ms leaves a loaded machine 2.7 s of lateness per chunk (400 ms against 2 s failed once in a
        // fresh-clone CI run, a chunk reset about 3 s in; 300 ms against 1 s before that). A slower machine only makes
        // the upload longer than the timeout, as the test needs.
        await using var harness = await Harness.StartAsync(Harness.Vhost("ut.localhost", _dir.Combine("site")) with
        {
            Proxy = [Harness.Proxy("/", _unix.Upstream, read: TimeSpan.FromSeconds(3))],
        });
        using var client = harness.CreateClient();
        using var content = new TrickleContent(chunks: 12, TimeSpan.FromMilliseconds(300));
        using var response = await client.PostAsync(new Uri("http://ut.localhost/trickle"), content);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(12 * 1024, EchoResult.Parse(await response.Content.ReadAsStringAsync()).Length);
    }

    [Theory]
    [InlineData("hang")]
    [InlineData("hang-after-chunk")]
    public async Task A_client_that_leaves_cancels_the_upstream_request(string mode)
    {
        var connection = await RawConnection.ConnectAsync(_harness.Port);
        await connection.SendAsync($"GET /long HTTP/1.1\r\nHost: u.localhost\r\nX-Mode: {mode}\r\n\r\n");
        await _unix.Started.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await connection.DisposeAsync();
        await _unix.Aborted.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Empty(ProxyWarnings());
    }

    [Theory]
    [InlineData("Content-Length: 100000\r\n\r\n")]
    [InlineData("Transfer-Encoding: chunked\r\n\r\n3e8\r\n")]
    public async Task An_application_dying_mid_body_aborts_the_client_connection(string framing)
    {
        _raw.Behaviour = (socket, _, ct) => RawUpstream.Respond(socket, "HTTP/1.1 200 OK\r\n" + framing + new string('x', 1000), ct, close: true);
        var status = 0;
        var failure = await Record.ExceptionAsync(async () =>
        {
            // The abort may even overtake the response head the client had not read yet: either way, no success.
            using var response = await _client.GetAsync(new Uri("http://raw.localhost/dies"), HttpCompletionOption.ResponseHeadersRead);
            status = (int)response.StatusCode;
            await response.Content.ReadAsByteArrayAsync();
        });
        Assert.True(failure is HttpRequestException or IOException, $"the truncated body was passed off as complete ({failure})");
        Assert.True(status is 0 or 200, $"status {status}");
        // The client can see the abort before the worker has logged why (the abort comes first).
        Assert.Contains("broke off", Assert.Single(await ProxyWarningsAsync()).RenderMessage(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_early_answer_to_an_upload_is_passed_on()
    {
        var data = new byte[4 * 1024 * 1024];
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri("http://u.localhost/reject")) { Content = new ByteArrayContent(data) };
        request.Headers.Add("X-Mode", "reject");
        using var response = await _client.SendAsync(request);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal("too large for the application\n", await response.Content.ReadAsStringAsync());

        // The server is still fine afterwards.
        Assert.Equal(HttpStatusCode.OK, (await _client.GetAsync(new Uri("http://t.localhost/after"))).StatusCode);
    }

    [Theory]
    [InlineData("u.localhost", false)]
    [InlineData("t.localhost", false)]
    [InlineData("u.localhost", true)]
    [InlineData("t.localhost", true)]
    public async Task A_websocket_reaches_the_application_over_http11_upgrade_and_http2_extended_connect(string host, bool http2)
    {
        _harness.Dispatcher.Protocol = http2 ? HandedProtocol.Http2 : HandedProtocol.Http1;
        using var invoker = new HttpMessageInvoker(_harness.CreateHandler());
        using var socket = new System.Net.WebSockets.ClientWebSocket();
        socket.Options.HttpVersion = http2 ? HttpVersion.Version20 : HttpVersion.Version11;
        socket.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        socket.Options.CollectHttpResponseDetails = true;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await socket.ConnectAsync(new Uri($"ws://{host}/ws/chat?room=1"), invoker, timeout.Token);
        Assert.Equal(http2 ? HttpStatusCode.OK : HttpStatusCode.SwitchingProtocols, socket.HttpStatusCode);

        // The application saw an HTTP/1.1 upgrade with the forwarded fields, whatever the client spoke.
        var seen = EchoResult.Parse(Encoding.UTF8.GetString(await ReceiveAsync(socket, timeout.Token)));
        Assert.Equal("GET", seen.Method);
        Assert.Equal("/ws/chat?room=1", seen.Target);
        Assert.Equal("HTTP/1.1", seen.Protocol);
        Assert.Equal("websocket", seen.Header("Upgrade"), StringComparer.OrdinalIgnoreCase);
        Assert.Equal(host, seen.Header("Host"));
        Assert.Equal("127.0.0.1", seen.Header("X-Forwarded-For"));
        Assert.Equal(host, seen.Header("X-Forwarded-Host"));

        // Messages both ways, small and large (several frames and reads), text and binary.
        foreach (var size in new[] { 5, 200_000 })
        {
            var data = new byte[size];
            new Random(size).NextBytes(data);
            await socket.SendAsync(data, System.Net.WebSockets.WebSocketMessageType.Binary, true, timeout.Token);
            Assert.Equal(data, await ReceiveAsync(socket, timeout.Token));
        }

        await socket.SendAsync("hello"u8.ToArray(), System.Net.WebSockets.WebSocketMessageType.Text, true, timeout.Token);
        Assert.Equal("hello", Encoding.UTF8.GetString(await ReceiveAsync(socket, timeout.Token)));

        await socket.CloseAsync(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, "done", timeout.Token);
        Assert.Equal(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, socket.CloseStatus);
        Assert.Equal("bye", socket.CloseStatusDescription);
        Assert.Empty(ProxyWarnings());
    }

    [Fact]
    public async Task An_idle_websocket_is_closed_after_the_read_timeout()
    {
        await using var harness = await Harness.StartAsync(Harness.Vhost("idle.localhost", _dir.Combine("site")) with
        {
            Proxy = [Harness.Proxy("/", _unix.Upstream, read: TimeSpan.FromSeconds(1))],
        });
        using var invoker = new HttpMessageInvoker(harness.CreateHandler());
        using var socket = new System.Net.WebSockets.ClientWebSocket();
        socket.Options.KeepAliveInterval = TimeSpan.Zero;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await socket.ConnectAsync(new Uri("ws://idle.localhost/ws"), invoker, timeout.Token);
        await ReceiveAsync(socket, timeout.Token); // the application's greeting

        // Nothing is sent either way: the proxy gives up on the connection (no close frame: the TCP connection ends).
        var ended = await Record.ExceptionAsync(async () =>
        {
            var result = await socket.ReceiveAsync(new byte[1024], timeout.Token);
            Assert.Equal(System.Net.WebSockets.WebSocketMessageType.Close, result.MessageType);
        });
        Assert.False(timeout.IsCancellationRequested, "the idle connection was still open after 30 s");
        Assert.True(ended is null or System.Net.WebSockets.WebSocketException, $"{ended}");
        Assert.Contains(
            harness.Sink.Events,
            e => e.Level == LogEventLevel.Information && e.RenderMessage().Contains("without traffic", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_grpc_looking_http2_request_keeps_the_request_body_limit()
    {
        // YARP lifts MaxRequestBodySize for gRPC-looking HTTP/2 requests it forwards over HTTP/2; ours go over HTTP/1.1,
        // and the vhost's limit must hold for them too.
        _harness.Dispatcher.Protocol = HandedProtocol.Http2;
        using var client = _harness.CreateClient(HttpVersion.Version20);
        // No Content-Length (a stream, as gRPC sends): the limit is enforced as the bytes arrive.
        using var content = new StreamContent(new MemoryStream(new byte[34_000_000]));
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/grpc");
        using var response = await client.PostAsync(new Uri("http://u.localhost/grpc.Service/Method"), content);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.True(_unix.BodyBytes < 34_000_000, $"the application received {_unix.BodyBytes} bytes");
    }

    [Fact]
    public async Task Connect_never_reaches_the_application()
    {
        // Authority-form has no path, so no prefix matches: the static pipeline refuses the method (405). The proxy's
        // own refusal (501) covers a CONNECT that would match.
        var response = await RawConnection.RequestAsync(_harness.Port, "CONNECT u.localhost:443 HTTP/1.1\r\nHost: u.localhost:443\r\n\r\n");
        Assert.True(response.Status is 405 or 501, response.StatusLine);
        Assert.Equal(0, _unix.Requests);
    }

    [Fact]
    public async Task Response_trailers_reach_an_http2_client()
    {
        _harness.Dispatcher.Protocol = HandedProtocol.Http2;
        using var client = _harness.CreateClient(HttpVersion.Version20);
        _raw.Behaviour = (socket, _, ct) => RawUpstream.Respond(
            socket,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
            + "13\r\nbody with trailers\n\r\n0\r\nX-Checksum: abc123\r\n\r\n",
            ct);
        using var response = await client.GetAsync(new Uri("http://raw.localhost/trailers"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("body with trailers\n", await response.Content.ReadAsStringAsync());
        Assert.Equal("abc123", Assert.Single(response.TrailingHeaders.GetValues("X-Checksum")));
    }

    [Fact]
    public async Task Expect_100_continue_gets_its_continue_and_the_body_reaches_the_application()
    {
        await using var connection = await RawConnection.ConnectAsync(_harness.Port);
        await connection.SendAsync("POST /expect HTTP/1.1\r\nHost: u.localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        var interim = await connection.ReadResponseAsync();
        Assert.Equal(100, interim.Status);
        await connection.SendAsync("hello");
        var response = await connection.ReadResponseAsync();
        Assert.Equal(200, response.Status);
        var echo = EchoResult.Parse(response.Text);
        Assert.Equal(5, echo.Length);
        Assert.Null(echo.Header("Expect"));
    }

    private static async Task<byte[]> ReceiveAsync(System.Net.WebSockets.ClientWebSocket socket, CancellationToken cancellationToken)
    {
        var message = new MemoryStream();
        var buffer = new byte[16 * 1024];
        while (true)
        {
            var result = await socket.ReceiveAsync(buffer, cancellationToken);
            Assert.NotEqual(System.Net.WebSockets.WebSocketMessageType.Close, result.MessageType);
            message.Write(buffer, 0, result.Count);
            if (result.EndOfMessage)
            {
                return message.ToArray();
            }
        }
    }

    [Fact]
    public async Task An_http2_client_is_proxied_over_http11()
    {
        _harness.Dispatcher.Protocol = HandedProtocol.Http2;
        using var client = _harness.CreateClient(HttpVersion.Version20);
        var data = new byte[1024 * 1024 + 17];
        new Random(99).NextBytes(data);
        using var response = await client.PostAsync(new Uri("http://u.localhost/h2?x=1"), new ByteArrayContent(data));
        Assert.Equal(HttpVersion.Version20, response.Version);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var echo = EchoResult.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("HTTP/1.1", echo.Protocol);
        Assert.Equal("/h2?x=1", echo.Target);
        Assert.Equal("u.localhost", echo.Header("Host"));
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)), echo.Sha256);
    }

    [Fact]
    public async Task Curl_through_the_dispatcher()
    {
        _harness.Dispatcher.ReadInitial = InitialRead.Head;
        var port = _harness.Port;
        var result = await Curl.RunAsync("-i", "--resolve", $"u.localhost:{port}:127.0.0.1", $"http://u.localhost:{port}/curl/%7Efile?q=a%20b");
        Assert.Equal(0, result.ExitCode);
        Assert.Equal(200, result.Status);
        Assert.Contains("X-Upstream: unix", result.Output, StringComparison.OrdinalIgnoreCase);
        var echo = EchoResult.Parse(result.Output[result.Output.IndexOf('{', StringComparison.Ordinal)..]);
        Assert.Equal("/curl/%7Efile?q=a%20b", echo.Target);
        Assert.Equal($"u.localhost:{port}", echo.Header("X-Forwarded-Host"));
        Assert.StartsWith("curl/", echo.Header("User-Agent"), StringComparison.Ordinal);
    }

    private List<LogEvent> ProxyWarnings() => [.. _harness.Sink.Events.Where(e =>
        e.Level == LogEventLevel.Warning && CollectingSink.Scalar(e, "SourceContext") == ProxySource)];

    /// <summary>The proxy's warnings once there is at least one (waiting up to 10 s for it).</summary>
    private async Task<List<LogEvent>> ProxyWarningsAsync()
    {
        for (var waited = 0; waited < 10_000 && ProxyWarnings().Count == 0; waited += 20)
            await Task.Delay(20);
        return ProxyWarnings();
    }

    /// <summary>Sends <c>chunks</c> KiB-sized chunks with a pause before each, chunked (no length).</summary>
    private sealed class TrickleContent(int chunks, TimeSpan pause) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            for (var i = 0; i < chunks; i++)
            {
                await Task.Delay(pause);
                await stream.WriteAsync(new byte[1024]);
                await stream.FlushAsync();
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    /// <summary>Sends the first half, waits for <paramref name="gate"/>, then sends the second half.</summary>
    private sealed class GatedContent : HttpContent
    {
        private readonly byte[] _data;
        private readonly bool _withLength;
        private readonly Func<bool> _gate;

        public GatedContent(byte[] data, bool withLength, Func<bool> gate)
        {
            _data = data;
            _withLength = withLength;
            _gate = gate;
            Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/octet-stream");
        }

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            var half = _data.Length / 2;
            for (var offset = 0; offset < half; offset += 65536)
            {
                await stream.WriteAsync(_data.AsMemory(offset, Math.Min(65536, half - offset)));
            }

            await stream.FlushAsync();
            var watch = Stopwatch.StartNew();
            while (!_gate())
            {
                if (watch.Elapsed > TimeSpan.FromSeconds(15))
                {
                    throw new TimeoutException("the application received nothing of the first half: the proxy buffers request bodies");
                }

                await Task.Delay(10);
            }

            for (var offset = half; offset < _data.Length; offset += 65536)
            {
                await stream.WriteAsync(_data.AsMemory(offset, Math.Min(65536, _data.Length - offset)));
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = _data.Length;
            return _withLength;
        }
    }
}
