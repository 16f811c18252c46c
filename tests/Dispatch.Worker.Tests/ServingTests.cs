using System.Net;
using System.Net.Http.Headers;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests;

/// <summary>Static files through the whole stack: fake dispatcher → handed socket → Kestrel → vhost → StaticFiles.</summary>
public sealed class ServingTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const string Secret = "TOP-SECRET-a94e";
    private readonly TempDir _dir = new();
    private Harness _harness = null!;
    private HttpClient _client = null!;

    public async Task InitializeAsync()
    {
        _dir.Write("secret/secret.txt", Secret);
        _dir.Write("a/index.html", "<h1>A home</h1>");
        _dir.Write("a/style.css", "body{}");
        _dir.Write("a/data.json", "{}");
        _dir.Write("a/blob.weirdext", "blob");
        _dir.Write("a/ten.txt", "0123456789");
        File.WriteAllBytes(_dir.Combine("a/large.bin"), LargeFile);
        _dir.Write("a/noindex/file.txt", "file");
        _dir.Write("a/sub/real.txt", "real inside");
        _dir.Write("a/.git/config", Secret);
        _dir.Symlink("a/leak.txt", _dir.Combine("secret/secret.txt"));
        _dir.Symlink("a/leakdir", _dir.Combine("secret"));
        _dir.Symlink("a/alias.txt", "sub/real.txt");
        _dir.Write("b/index.html", "<h1>B home</h1>");
        _dir.Write("b/listed/one.txt", "1");
        _dir.Write("b/listed/two.txt", "2");
        _dir.Symlink("b/listed/leak.txt", _dir.Combine("secret/secret.txt"));
        _dir.Write("c/default.htm", "c default");

        _harness = await Harness.StartAsync(
            Harness.Vhost("a.localhost", _dir.Combine("a"), aliases: ["www.a.localhost"]),
            Harness.Vhost("b.localhost", _dir.Combine("b"), listing: true),
            Harness.Vhost("c.localhost", _dir.Combine("c"), aliases: ["*.c.localhost"], index: ["default.htm", "index.html"]));
        _client = _harness.CreateClient();
    }

    public async Task DisposeAsync()
    {
        var problems = _harness.Sink.DumpProblems();
        if (problems.Length > 0)
        {
            output.WriteLine(problems);
        }

        _client.Dispose();
        await _harness.DisposeAsync();
        _dir.Dispose();
    }

    [Fact]
    public async Task Hosting_builds_no_activity_or_log_scope_per_request_and_errors_are_still_logged()
    {
        // Enabled at any level (this harness logs Verbose), the hosting category makes ASP.NET Core build an Activity
        // and a log scope for every request.
        var loggers = _harness.Server.Services.GetRequiredService<ILoggerFactory>();
        Assert.False(loggers.CreateLogger(WorkerHttpServer.HostingDiagnosticsCategory).IsEnabled(LogLevel.Critical));
        Assert.True(loggers.CreateLogger("Microsoft.AspNetCore.Server.Kestrel").IsEnabled(LogLevel.Warning));

        using var response = await _client.GetAsync(new Uri("http://a.localhost/"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.DoesNotContain(_harness.Sink.Events, e => e.Properties.TryGetValue("SourceContext", out var c) && c.ToString().Contains(WorkerHttpServer.HostingDiagnosticsCategory, StringComparison.Ordinal));
    }

    [Fact]
    public async Task Index_file_with_content_type_and_nosniff()
    {
        using var response = await _client.GetAsync(new Uri("http://a.localhost/"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("<h1>A home</h1>", await response.Content.ReadAsStringAsync());
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("nosniff", Assert.Single(response.Headers.GetValues("X-Content-Type-Options")));
        Assert.False(response.Headers.Contains("Server"));
        Assert.NotNull(response.Headers.ETag);
        Assert.NotNull(response.Content.Headers.LastModified);
    }

    [Theory]
    [InlineData("/style.css", "text/css")]
    [InlineData("/data.json", "application/json")]
    [InlineData("/ten.txt", "text/plain")]
    [InlineData("/blob.weirdext", "application/octet-stream")]
    public async Task Content_types(string path, string mediaType)
    {
        using var response = await _client.GetAsync(new Uri("http://a.localhost" + path));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(mediaType, response.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task Head_has_length_and_no_body()
    {
        using var request = new HttpRequestMessage(HttpMethod.Head, new Uri("http://a.localhost/ten.txt"));
        using var response = await _client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(10, response.Content.Headers.ContentLength);
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());

        // The raw wire: no body bytes follow a HEAD response (the next response parses cleanly).
        await using var raw = await RawConnection.ConnectAsync(_harness.Port);
        await raw.SendAsync("HEAD /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\nGET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        var head = await raw.ReadResponseAsync(head: true);
        Assert.Equal(200, head.Status);
        Assert.Equal("10", head.Header("Content-Length"));
        var get = await raw.ReadResponseAsync();
        Assert.Equal("0123456789", get.Text);
    }

    // Not a multiple of StaticFileBody's chunk, nor of a pipe block.
    private static readonly byte[] LargeFile = [.. Enumerable.Range(0, (5 * StaticFileBody.Chunk) + 1234).Select(i => (byte)(i * 7 % 251))];

    [Fact]
    public async Task A_file_of_several_chunks_is_sent_whole_and_by_range()
    {
        Assert.Equal(LargeFile, await _client.GetByteArrayAsync(new Uri("http://a.localhost/large.bin")));

        // A range across chunk boundaries, and one ending at the last byte.
        foreach (var (from, to) in new[] { (StaticFileBody.Chunk - 3L, (3L * StaticFileBody.Chunk) + 5), (LargeFile.Length - 100L, LargeFile.Length - 1L) })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, new Uri("http://a.localhost/large.bin"));
            request.Headers.Range = new RangeHeaderValue(from, to);
            using var response = await _client.SendAsync(request);
            Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
            Assert.Equal(LargeFile[(int)from..((int)to + 1)], await response.Content.ReadAsByteArrayAsync());
        }
    }

    [Fact]
    public async Task Range_requests()
    {
        using (var request = new HttpRequestMessage(HttpMethod.Get, new Uri("http://a.localhost/ten.txt")))
        {
            request.Headers.Range = new RangeHeaderValue(2, 5);
            using var response = await _client.SendAsync(request);
            Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
            Assert.Equal("2345", await response.Content.ReadAsStringAsync());
            Assert.Equal("bytes 2-5/10", response.Content.Headers.ContentRange?.ToString());
        }

        using (var request = new HttpRequestMessage(HttpMethod.Get, new Uri("http://a.localhost/ten.txt")))
        {
            request.Headers.Range = new RangeHeaderValue(null, 3);
            using var response = await _client.SendAsync(request);
            Assert.Equal(HttpStatusCode.PartialContent, response.StatusCode);
            Assert.Equal("789", await response.Content.ReadAsStringAsync());
        }

        using (var request = new HttpRequestMessage(HttpMethod.Get, new Uri("http://a.localhost/ten.txt")))
        {
            request.Headers.Range = new RangeHeaderValue(100, 200);
            using var response = await _client.SendAsync(request);
            Assert.Equal(HttpStatusCode.RequestedRangeNotSatisfiable, response.StatusCode);
            Assert.Equal("bytes */10", response.Content.Headers.ContentRange?.ToString());
        }
    }

    [Fact]
    public async Task Conditional_requests_answer_304()
    {
        using var first = await _client.GetAsync(new Uri("http://a.localhost/ten.txt"));
        var etag = first.Headers.ETag!;
        var lastModified = first.Content.Headers.LastModified!.Value;

        using (var request = new HttpRequestMessage(HttpMethod.Get, new Uri("http://a.localhost/ten.txt")))
        {
            request.Headers.IfNoneMatch.Add(etag);
            using var response = await _client.SendAsync(request);
            Assert.Equal(HttpStatusCode.NotModified, response.StatusCode);
            Assert.Empty(await response.Content.ReadAsByteArrayAsync());
        }

        using (var request = new HttpRequestMessage(HttpMethod.Get, new Uri("http://a.localhost/ten.txt")))
        {
            request.Headers.IfModifiedSince = lastModified;
            using var response = await _client.SendAsync(request);
            Assert.Equal(HttpStatusCode.NotModified, response.StatusCode);
        }

        using (var request = new HttpRequestMessage(HttpMethod.Get, new Uri("http://a.localhost/ten.txt")))
        {
            request.Headers.IfNoneMatch.Add(new EntityTagHeaderValue("\"other\""));
            using var response = await _client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
    }

    [Fact]
    public async Task Directories_without_index_are_404_unless_listing_is_on()
    {
        using (var response = await _client.GetAsync(new Uri("http://a.localhost/noindex/")))
        {
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        }

        using (var response = await _client.GetAsync(new Uri("http://a.localhost/noindex")))
        {
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        }

        using (var response = await _client.GetAsync(new Uri("http://b.localhost/listed/")))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var html = await response.Content.ReadAsStringAsync();
            Assert.Contains("one.txt", html, StringComparison.Ordinal);
            Assert.Contains("two.txt", html, StringComparison.Ordinal);
            Assert.DoesNotContain("leak.txt", html, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Directory_without_slash_redirects_to_slash()
    {
        using (var response = await _client.GetAsync(new Uri("http://a.localhost/sub")))
        {
            // No index and no listing in a/sub: 404, not a redirect.
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        }

        using (var response = await _client.GetAsync(new Uri("http://b.localhost/listed?x=1")))
        {
            Assert.Equal(HttpStatusCode.MovedPermanently, response.StatusCode);
            Assert.Equal("http://b.localhost/listed/?x=1", response.Headers.Location?.ToString());
        }

        _dir.Write("a/withindex/index.html", "idx");
        using (var response = await _client.GetAsync(new Uri("http://a.localhost/withindex")))
        {
            Assert.Equal(HttpStatusCode.MovedPermanently, response.StatusCode);
            Assert.EndsWith("/withindex/", response.Headers.Location?.ToString(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Redirects_keep_https_when_the_dispatcher_terminated_tls()
    {
        _harness.Dispatcher.TlsProtocol = "Tls13";
        var response = await RawConnection.RequestAsync(_harness.Port, "GET /listed HTTP/1.1\r\nHost: b.localhost\r\nConnection: close\r\n\r\n");
        Assert.Equal(301, response.Status);
        Assert.Equal("https://b.localhost/listed/", response.Header("Location"));
    }

    [Fact]
    public async Task Custom_index_files_and_wildcard_alias()
    {
        using var response = await _client.GetAsync(new Uri("http://x.c.localhost/"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("c default", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Two_vhosts_with_different_roots_on_one_server_and_one_connection()
    {
        await using var raw = await RawConnection.ConnectAsync(_harness.Port);
        await raw.SendAsync("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("<h1>A home</h1>", (await raw.ReadResponseAsync()).Text);
        await raw.SendAsync("GET / HTTP/1.1\r\nHost: B.LOCALHOST.:8080\r\n\r\n");
        Assert.Equal("<h1>B home</h1>", (await raw.ReadResponseAsync()).Text);
        await raw.SendAsync("GET / HTTP/1.1\r\nHost: www.a.localhost\r\n\r\n");
        Assert.Equal("<h1>A home</h1>", (await raw.ReadResponseAsync()).Text);
    }

    [Theory]
    [InlineData("nope.localhost")]
    [InlineData("c.localhost.evil")]
    [InlineData("a.b.c.localhost")]
    [InlineData("127.0.0.1")]
    public async Task Unknown_host_is_421_and_the_connection_is_closed(string host)
    {
        await using var raw = await RawConnection.ConnectAsync(_harness.Port);
        await raw.SendAsync($"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        var response = await raw.ReadResponseAsync();
        Assert.Equal(421, response.Status);
        Assert.Equal("close", response.Header("Connection"));
        Assert.Contains("Misdirected", response.Text, StringComparison.Ordinal);
        Assert.True(await raw.IsClosedByServerAsync(TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Missing_host_is_400()
    {
        // HTTP/1.0 may omit Host (Kestrel itself answers 400 to an HTTP/1.1 request without one).
        var response = await RawConnection.RequestAsync(_harness.Port, "GET / HTTP/1.0\r\n\r\n");
        Assert.Equal(400, response.Status);
        response = await RawConnection.RequestAsync(_harness.Port, "GET / HTTP/1.1\r\n\r\n");
        Assert.Equal(400, response.Status);
    }

    [Theory]
    [InlineData("/../secret/secret.txt")]
    [InlineData("/../../secret/secret.txt")]
    [InlineData("/sub/../../secret/secret.txt")]
    [InlineData("/%2e%2e/secret/secret.txt")]
    [InlineData("/%2E%2E/%2e%2e/secret/secret.txt")]
    [InlineData("/..%2fsecret%2fsecret.txt")]
    [InlineData("/%2e%2e%2fsecret%2fsecret.txt")]
    [InlineData("/%252e%252e/secret/secret.txt")]
    [InlineData("/..%5csecret%5csecret.txt")]
    [InlineData("/..\\secret\\secret.txt")]
    [InlineData("/leak.txt")]
    [InlineData("/leakdir/secret.txt")]
    [InlineData("/leakdir/")]
    [InlineData("/%6ceak.txt")]
    [InlineData("/.git/config")]
    [InlineData("/%2egit/config")]
    [InlineData("/index.html%00")]
    [InlineData("http://a.localhost/../secret/secret.txt")]
    public async Task Traversal_never_yields_outside_bytes(string target)
    {
        var response = await RawConnection.RequestAsync(
            _harness.Port, $"GET {target} HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n");
        Assert.NotEqual(200, response.Status);
        Assert.True(response.Status is 400 or 404, $"{target}: {response.StatusLine}");
        Assert.DoesNotContain(Secret, response.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Symlink_inside_the_root_is_served()
    {
        using var response = await _client.GetAsync(new Uri("http://a.localhost/alias.txt"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("real inside", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Other_methods_are_405_and_the_body_is_skipped()
    {
        await using var raw = await RawConnection.ConnectAsync(_harness.Port);
        await raw.SendAsync("POST /ten.txt HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: 5\r\n\r\nhelloGET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        var post = await raw.ReadResponseAsync();
        Assert.Equal(405, post.Status);
        Assert.Equal("GET, HEAD", post.Header("Allow"));
        var get = await raw.ReadResponseAsync();
        Assert.Equal("0123456789", get.Text);
    }

    [Fact]
    public async Task Access_log_has_the_structured_properties()
    {
        _harness.Dispatcher.Sni = "a.localhost";
        using (var request = new HttpRequestMessage(HttpMethod.Get, new Uri("http://a.localhost/ten.txt?q=1")))
        {
            request.Headers.Referrer = new Uri("http://a.localhost/from");
            request.Headers.UserAgent.ParseAdd("probe/1.0");
            using var response = await _client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        var handed = _harness.Dispatcher.Handed.Last();
        var logged = await WaitForAsync(() => _harness.Sink.AccessEvents.FirstOrDefault(e => CollectingSink.Scalar(e, "Path") == "/ten.txt"));
        Assert.Equal(Serilog.Events.LogEventLevel.Information, logged.Level);
        Assert.Equal("a.localhost", CollectingSink.Scalar(logged, "Vhost"));
        Assert.Equal("GET", CollectingSink.Scalar(logged, "Method"));
        Assert.Equal("200", CollectingSink.Scalar(logged, "Status"));
        Assert.Equal("10", CollectingSink.Scalar(logged, "Bytes"));
        Assert.Equal("127.0.0.1", CollectingSink.Scalar(logged, "ClientAddress"));
        Assert.Equal(handed.ConnectionId.ToString(System.Globalization.CultureInfo.InvariantCulture), CollectingSink.Scalar(logged, "ConnectionId"));
        Assert.Equal("a.localhost", CollectingSink.Scalar(logged, "Sni"));
        Assert.Equal("HTTP/1.1", CollectingSink.Scalar(logged, "Protocol"));
        Assert.True(double.Parse(CollectingSink.Scalar(logged, "ElapsedMs")!, System.Globalization.CultureInfo.InvariantCulture) >= 0);
        Assert.Equal("http://a.localhost/from", CollectingSink.Scalar(logged, "Referer"));
        Assert.Equal("probe/1.0", CollectingSink.Scalar(logged, "UserAgent"));
        Assert.Equal("?q=1", CollectingSink.Scalar(logged, "Query"));
        Assert.Equal("/ten.txt?q=1", CollectingSink.Scalar(logged, "Target"));
        Assert.True(logged.Properties.ContainsKey("TlsProtocol"));
        Assert.Null(CollectingSink.Scalar(logged, "TlsProtocol"));
        Assert.Equal(RequestHandler.AccessLogTemplate, logged.MessageTemplate.Text);
        var rendered = logged.RenderMessage(System.Globalization.CultureInfo.InvariantCulture);
        Assert.StartsWith("\"a.localhost\" \"127.0.0.1\" \"\"GET\" \"/ten.txt\"\" 200 10 \"HTTP/1.1\" ", rendered, StringComparison.Ordinal);

        await RawConnection.RequestAsync(_harness.Port, "GET / HTTP/1.1\r\nHost: nope.localhost\r\n\r\n");
        var misdirected = await WaitForAsync(() => _harness.Sink.AccessEvents.FirstOrDefault(e => CollectingSink.Scalar(e, "Status") == "421"));
        Assert.Null(CollectingSink.Scalar(misdirected, "Vhost"));
    }

    [Fact]
    public async Task Client_address_from_the_dispatcher_wins_over_the_socket()
    {
        _harness.Dispatcher.ClientOverride = new IPEndPoint(IPAddress.Parse("203.0.113.7"), 40000);
        await RawConnection.RequestAsync(_harness.Port, "GET /ten.txt?override HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n");
        var logged = await WaitForAsync(() => _harness.Sink.AccessEvents.LastOrDefault(e => CollectingSink.Scalar(e, "Path") == "/ten.txt"));
        Assert.Equal("203.0.113.7", CollectingSink.Scalar(logged, "ClientAddress"));
    }

    private static async Task<T> WaitForAsync<T>(Func<T?> probe)
        where T : class
    {
        for (var i = 0; i < 200; i++)
        {
            if (probe() is { } found)
            {
                return found;
            }

            await Task.Delay(10);
        }

        throw new TimeoutException("condition not reached");
    }
}
