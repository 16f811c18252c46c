using System.Net;
using System.Security.Cryptography;
using System.Text;
using Dispatch.Worker.FastCgi;
using Dispatch.Worker.Tests.Support;
using Serilog.Events;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests.FastCgi;

/// <summary>
/// The FastCGI client against hand-written applications: a good one (parameters, streamed body, keep-alive reuse,
/// stderr), and bad ones — one that dies mid-response, one that never answers, ones that send malformed records. Each
/// bad answer gives 502/504 (or an aborted connection once the response started) with an error-log line, and the
/// next request works on a fresh connection.
/// </summary>
public sealed class FastCgiHandlerTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TempDir _dir = new();
    private FakeFastCgiServer _app = null!;
    private Harness _harness = null!;
    private HttpClient _client = null!;
    private TaskCompletionSource _proceed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async Task InitializeAsync()
    {
        _dir.Write("site/app.php", "<?php // never read by the worker");
        _dir.Write("site/index.html", "static home");
        _dir.Write("site/style.css", "body{}");
        _app = new FakeFastCgiServer(_dir.Combine("app.sock"), AnswerAsync);
        var root = _dir.Combine("site");
        _harness = await Harness.StartAsync(
            Harness.Vhost("f.localhost", root) with
            {
                FastCgi = new Dispatch.Wire.Payloads.FastCgiRoute(_app.Path, TimeSpan.Zero, TimeSpan.FromSeconds(1), null),
                Web = Dispatch.Wire.Payloads.VhostWeb.Default with { MaxBodySize = 64L << 20 },
                TryFiles = ["$uri", "$uri/", "/app.php"],
            },
            Harness.Vhost("gone.localhost", root) with { FastCgi = new Dispatch.Wire.Payloads.FastCgiRoute(_dir.Combine("missing.sock"), TimeSpan.Zero, TimeSpan.Zero, null) });
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
        await _app.DisposeAsync();
        _dir.Dispose();
    }

    [Fact]
    public async Task A_good_application_gets_the_parameters_and_answers_on_a_kept_connection()
    {
        var first = await GetAsync("/2024/hello-world?x=1");
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var text = await first.Content.ReadAsStringAsync();
        Assert.Contains("SCRIPT_NAME=/app.php\n", text, StringComparison.Ordinal);
        Assert.Contains($"SCRIPT_FILENAME={_dir.Combine("site")}/app.php\n", text, StringComparison.Ordinal);
        Assert.Contains("REQUEST_URI=/2024/hello-world?x=1\n", text, StringComparison.Ordinal);
        Assert.Contains("QUERY_STRING=x=1\n", text, StringComparison.Ordinal);
        Assert.Contains($"DOCUMENT_ROOT={_dir.Combine("site")}\n", text, StringComparison.Ordinal);
        Assert.Contains("SERVER_NAME=f.localhost\n", text, StringComparison.Ordinal);
        Assert.Contains("REMOTE_ADDR=127.0.0.1\n", text, StringComparison.Ordinal);
        Assert.Contains("HTTP_HOST=f.localhost\n", text, StringComparison.Ordinal);
        Assert.Contains("REQUEST_METHOD=GET\n", text, StringComparison.Ordinal);
        Assert.Contains("flags=1\n", text, StringComparison.Ordinal); // FCGI_KEEP_CONN
        Assert.DoesNotContain("HTTPS=", text, StringComparison.Ordinal);
        Assert.Equal("yes", first.Headers.GetValues("X-Fake").Single());

        var second = await GetAsync("/app.php/extra/path");
        var secondText = await second.Content.ReadAsStringAsync();
        Assert.Contains("PATH_INFO=/extra/path\n", secondText, StringComparison.Ordinal);
        Assert.Contains("SCRIPT_NAME=/app.php\n", secondText, StringComparison.Ordinal);
        Assert.Equal(1, _app.Accepted); // the same connection, kept alive
    }

    [Fact]
    public async Task Static_files_are_served_directly_and_php_source_never()
    {
        var css = await GetAsync("/style.css");
        Assert.Equal("body{}", await css.Content.ReadAsStringAsync());
        var home = await GetAsync("/");
        Assert.Equal("static home", await home.Content.ReadAsStringAsync());
        Assert.Equal(0, _app.Accepted);

        var missing = await GetAsync("/missing.php");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Equal(0, _app.Accepted);
    }

    [Fact]
    public async Task A_large_body_is_streamed_intact_and_the_connection_kept()
    {
        var body = RandomNumberGenerator.GetBytes(50 * 1024 * 1024);
        using var content = new StreamContent(new MemoryStream(body));
        content.Headers.ContentLength = body.Length;
        using var response = await _client.PostAsync(Url("/upload"), content);
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains($"body={body.Length} {Convert.ToHexStringLower(SHA256.HashData(body))}\n", text, StringComparison.Ordinal);
        Assert.Equal(200, (int)(await GetAsync("/again")).StatusCode);
        Assert.Equal(1, _app.Accepted);
    }

    [Fact]
    public async Task Stderr_records_go_to_the_error_log_sanitized()
    {
        var response = await GetAsync("/x?mode=stderr");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var lines = Warnings().Where(m => m.Contains("stderr:", StringComparison.Ordinal)).ToList();
        Assert.Contains(lines, l => l.Contains("PHP Warning: something", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("forged?[31mred", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("die-before", 502, "closed before the end of the request")]
    [InlineData("bad-version", 502, "record version 2")]
    [InlineData("bad-type", 502, "unexpected record type 9")]
    [InlineData("bad-id", 502, "request id 7")]
    [InlineData("bad-end", 502, "FCGI_END_REQUEST with 12 bytes")]
    [InlineData("bad-head", 502, "invalid response header")]
    [InlineData("no-head", 502, "without a complete header block")]
    [InlineData("overloaded", 502, "protocol status 2")]
    [InlineData("silent", 504, "no answer within 1 s")]
    public async Task A_bad_application_gets_an_error_page_and_a_log_line_and_the_next_request_works(string mode, int status, string logged)
    {
        await WarmAsync();
        var before = _app.Accepted;
        var response = await GetAsync($"/x?mode={mode}");
        Assert.Equal(status, (int)response.StatusCode);
        Assert.Contains(Warnings(), m => m.Contains(logged, StringComparison.Ordinal));

        var next = await GetAsync("/x?mode=ok");
        Assert.Equal(HttpStatusCode.OK, next.StatusCode);
        Assert.Equal(before + 1, _app.Accepted); // the failed connection was discarded, a new one made
    }

    [Theory]
    [InlineData("die-mid", "closed inside a record's content")]
    [InlineData("silent-mid", "no answer within 1 s")]
    [InlineData("bad-mid", "record version 9")]
    public async Task A_failure_after_the_response_started_aborts_the_client_connection(string mode, string logged)
    {
        await WarmAsync();
        var response = await _client.GetAsync(Url($"/x?mode={mode}"), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        _proceed.SetResult();
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => response.Content.ReadAsByteArrayAsync());
        Assert.Contains(Warnings(), m => m.Contains(logged, StringComparison.Ordinal) && m.Contains("connection aborted", StringComparison.Ordinal));
        Assert.Equal(HttpStatusCode.OK, (await GetAsync("/x?mode=ok")).StatusCode);
    }

    [Fact]
    public async Task No_application_gives_502_with_a_log_line()
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, Url("/app.php"));
        request.Headers.Host = "gone.localhost";
        var response = await _client.SendAsync(request);
        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.Contains(Warnings(), m => m.Contains("cannot connect", StringComparison.Ordinal) && m.Contains("missing.sock", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_body_over_the_limit_gets_413_and_the_application_sees_no_complete_request()
    {
        // The head only: Kestrel refuses a declared length over the limit before a byte of the body is read.
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, _harness.Port);
        await socket.SendAsync(Encoding.ASCII.GetBytes($"POST /upload HTTP/1.1\r\nHost: f.localhost\r\nContent-Length: {(64 << 20) + 1}\r\n\r\n"));
        var buffer = new byte[4096];
        var n = await socket.ReceiveAsync(buffer);
        Assert.StartsWith("HTTP/1.1 413 ", Encoding.ASCII.GetString(buffer, 0, n), StringComparison.Ordinal);
        Assert.Equal(0, _app.Requests);
    }

    private async Task<bool> AnswerAsync(FakeFastCgiRequest request, Stream stream)
    {
        var query = request.Params.GetValueOrDefault("QUERY_STRING") ?? string.Empty;
        var mode = query.StartsWith("mode=", StringComparison.Ordinal) ? query[5..] : "ok";
        const string head = "Status: 200 OK\r\nContent-Type: text/plain\r\nX-Fake: yes\r\n\r\n";
        switch (mode)
        {
            case "stderr":
                await stream.WriteAsync(FakeFastCgiServer.Stderr("PHP Warning: something\nforged\u001b[31mred\n"));
                break;
            case "die-before":
                return false;
            case "die-mid":
                await stream.WriteAsync(FakeFastCgiServer.Stdout(head + new string('x', 1000)));
                await _proceed.Task; // the client has the response head
                await stream.WriteAsync(FakeFastCgiServer.Stdout("partial").AsMemory(0, 12)); // header and 4 of 7 bytes
                return false;
            case "silent":
                _ = await stream.ReadAsync(new byte[1]); // until the client gives up and closes the connection
                return false;
            case "silent-mid":
                await stream.WriteAsync(FakeFastCgiServer.Stdout(head + "start"));
                await _proceed.Task;
                _ = await stream.ReadAsync(new byte[1]); // until the client gives up and closes the connection
                return false;
            case "bad-version":
                await stream.WriteAsync(FakeFastCgiServer.Record(6, Encoding.ASCII.GetBytes(head), version: 2));
                return true;
            case "bad-mid":
                await stream.WriteAsync(FakeFastCgiServer.Stdout(head + "start"));
                await _proceed.Task;
                await stream.WriteAsync(FakeFastCgiServer.Record(6, "more"u8, version: 9));
                return true;
            case "bad-type":
                await stream.WriteAsync(FakeFastCgiServer.Record(9, []));
                return true;
            case "bad-id":
                await stream.WriteAsync(FakeFastCgiServer.Record(6, Encoding.ASCII.GetBytes(head), requestId: 7));
                return true;
            case "bad-end":
                await stream.WriteAsync(FakeFastCgiServer.Record(3, new byte[12]));
                return true;
            case "bad-head":
                await stream.WriteAsync(FakeFastCgiServer.Stdout("Not a header line\r\n\r\nbody"));
                await stream.WriteAsync(FakeFastCgiServer.EndRequest());
                return true;
            case "no-head":
                await stream.WriteAsync(FakeFastCgiServer.Stdout("Content-Type: text/plain\r\n"));
                await stream.WriteAsync(FakeFastCgiServer.EndRequest());
                return true;
            case "overloaded":
                await stream.WriteAsync(FakeFastCgiServer.EndRequest(protocolStatus: 2));
                return true;
        }

        var text = new StringBuilder();
        foreach (var (name, value) in request.Params.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            text.Append(name).Append('=').Append(value).Append('\n');
        }

        text.Append("flags=").Append(request.Flags).Append('\n');
        text.Append("body=").Append(request.BodyLength).Append(' ').Append(request.BodySha256).Append('\n');
        await FakeFastCgiServer.WriteResponseAsync(stream, head, Encoding.UTF8.GetBytes(text.ToString()));
        return true;
    }

    private async Task WarmAsync() => Assert.Equal(HttpStatusCode.OK, (await GetAsync("/x?mode=ok")).StatusCode);

    private List<string> Warnings() =>
        [.. _harness.Sink.Events.Where(e => e.Level >= LogEventLevel.Warning).Select(e => e.RenderMessage())];

    private static Uri Url(string path) => new($"http://f.localhost{path}");

    private async Task<HttpResponseMessage> GetAsync(string path) => await _client.GetAsync(Url(path));
}
