using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using Dispatch.Wire.Payloads;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;
using Serilog.Events;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests;

/// <summary>
/// CGI through the whole stack with real scripts (/bin/sh, /usr/bin/python3, coreutils) written at test time, real
/// sockets, HttpClient, raw HTTP and curl. The scripts run as the test's own uid (root here), which is fine for a
/// component test: in production the worker, and so its scripts, are the tenant, jailed.
/// </summary>
public sealed class CgiTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const string Python = "/usr/bin/python3";
    private const string LeakVariable = "DISPATCH_CGI_TEST_PARENT_SECRET";
    private readonly TempDir _dir = new();
    private Harness _harness = null!;
    private HttpClient _client = null!;

    private string Cgi => _dir.Combine("cgi");

    public async Task InitializeAsync()
    {
        Environment.SetEnvironmentVariable(LeakVariable, "leaked-d81f");
        _dir.Write("site/index.html", "<h1>home</h1>");
        _dir.Write("site/elsewhere/index.html", "elsewhere");
        Script("cgi/env.sh", "#!/bin/sh\necho 'Content-Type: text/plain'\necho\nenv\n");
        Script("cgi/tiny.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nok'\n");
        Script("cgi/sub/deeper.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\ndeeper:%s' \"$PATH_INFO\"\n");
        Script(
            "cgi/created.py",
            "#!/usr/bin/python3\nimport sys\nsys.stdout.write('Status: 201 Created\\r\\nX-Custom: custom-value\\r\\nSet-Cookie: a=1\\r\\nSet-Cookie: b=2\\r\\n"
            + "Content-Type: text/plain\\r\\n\\r\\ncreated by python\\n')\n");
        Script("cgi/redirect.sh", "#!/bin/sh\necho 'Location: /elsewhere/'\necho\n");
        Script("cgi/sha.sh", "#!/bin/sh\necho 'Content-Type: text/plain'\necho\nsha256sum\n");
        Script("cgi/sha-first.sh", "#!/bin/sh\nsum=$(sha256sum)\nprintf 'Content-Type: text/plain\\n\\n%s' \"$sum\"\n");
        Script("cgi/ignore-body.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nignored'\n");
        Script("cgi/fail.sh", "#!/bin/sh\necho 'something broke: code 3' >&2\nexit 3\n");
        Script("cgi/noheader.sh", "#!/bin/sh\necho 'no header at all'\n");
        Script("cgi/badheader.sh", "#!/bin/sh\nprintf 'Content-Type text/plain\\n\\nbody'\n");
        Script("cgi/hugeheader.sh", "#!/bin/sh\nprintf 'X-Big: '\nhead -c 70000 /dev/zero | tr '\\0' 'a'\n");
        Script("cgi/length.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\nContent-Length: 5\\n\\nhello'\n");
        Script("cgi/nocontent.sh", "#!/bin/sh\nprintf 'Status: 204 No Content\\n\\n'\n");
        Script("cgi/big.sh", "#!/bin/sh\necho 'Content-Type: application/octet-stream'\necho\nexec head -c 209715200 /dev/zero\n");
        Script("cgi/hang.sh", $"#!/bin/sh\nsleep 1000 &\necho $! >> {_dir.Combine("hang.pids")}\nsleep 1000 &\necho $! >> {_dir.Combine("hang.pids")}\necho $$ >> {_dir.Combine("hang.pids")}\nwait\n");
        Script("cgi/hang-after-header.sh", $"#!/bin/sh\necho $$ > {_dir.Combine("hang2.pid")}\nprintf 'Content-Type: text/plain\\n\\nstarted\\n'\nexec sleep 1000\n");
        Script("cgi/lingers.sh", $"#!/bin/sh\necho $$ > {_dir.Combine("linger.pid")}\nprintf 'Content-Type: text/plain\\n\\ndone'\nexec >&- 2>&-\nexec sleep 1000\n");
        Script("cgi/stream.sh", $"#!/bin/sh\necho $$ > {_dir.Combine("stream.pid")}\necho 'Content-Type: text/plain'\necho\nexec yes streaming-line\n");
        Script("cgi/silent.sh", $"#!/bin/sh\necho $$ > {_dir.Combine("silent.pid")}\nexec sleep 1000\n");
        Script("cgi/slow.sh", "#!/bin/sh\nsleep 2\nprintf 'Content-Type: text/plain\\n\\nslow'\n");
        Script("cgi/quiet.sh", "#!/bin/sh\nexec sleep 60\n");
        Script("cgi/sized.sh", "#!/bin/sh\necho 'Content-Type: application/octet-stream'\necho\nexec head -c 300001 /dev/zero\n");
        Script("cgi/fds.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nls /proc/self/fd\necho cwd=$(pwd)\n");
        Script("cgi/dev-stdout.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n' > /dev/stdout\necho via-dev-stdout > /dev/stdout\n");
        Script("cgi/no-interpreter.sh", "#!/nonexistent/interpreter\nprint 1\n");
        Script("cgi/garbage.bin", "\u0001\u0002\u0003 not an executable format");
        Script("cgi/nph-old.sh", "#!/bin/sh\nprintf 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nnph'\n");
        _dir.Write("cgi/not-executable.sh", "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho never\n");
        _dir.Write("cgi/.htpasswd.sh", "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho denied\n");
        File.SetUnixFileMode(_dir.Combine("cgi/.htpasswd.sh"), (UnixFileMode)0x1ed);
        Script("outside/evil.sh", "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho ESCAPED\n");
        _dir.Symlink("cgi/escape.sh", _dir.Combine("outside/evil.sh"));
        _dir.Symlink("cgi/escapedir", _dir.Combine("outside"));
        _dir.Symlink("cgi/alias.sh", "tiny.sh");
        Script("site/scripts/inside.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\ninside ran'\n");

        var root = _dir.Combine("site");
        _harness = await Harness.StartAsync(
            v => v.Name switch
            {
                "l.localhost" => CgiLimits.Default with { MaxProcesses = 2 },
                "m.localhost" => CgiLimits.Default with { MaxOutputBytes = 1_000_000 },
                _ => CgiLimits.Default,
            },
            Harness.Vhost("a.localhost", root) with
            {
                Cgi = [new CgiRoute("/cgi-bin/", Cgi), new CgiRoute("/inside", _dir.Combine("site/scripts"))],
                CgiTimeout = TimeSpan.FromSeconds(20),
            },
            Harness.Vhost("t.localhost", root) with { Cgi = [new CgiRoute("/cgi-bin/", Cgi)], CgiTimeout = TimeSpan.FromSeconds(1.5) },
            Harness.Vhost("l.localhost", root) with { Cgi = [new CgiRoute("/cgi-bin/", Cgi)] },
            Harness.Vhost("m.localhost", root) with { Cgi = [new CgiRoute("/cgi-bin/", Cgi)] });
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
        _dir.Dispose();

        // Every run cleaned up after itself: no pipe or pidfd left registered, no zombie child of ours, no error logged.
        // The scripts' registrations only: the reactor is the process's, and test classes that run beside this one
        // register their connections' sockets while a send waits (a CI run failed every test here on three of those).
        Assert.True(await WaitForAsync(() => FdReactor.Shared.RegisteredBy(CgiProcess.WatchOwner) == 0, TimeSpan.FromSeconds(5)), $"{FdReactor.Shared.RegisteredBy(CgiProcess.WatchOwner)} script descriptors still registered");
        Assert.True(await WaitForAsync(() => Processes.ZombieChildren().Count == 0, TimeSpan.FromSeconds(5)), "zombies: " + string.Join(' ', Processes.ZombieChildren()));
        Assert.DoesNotContain(_harness.Sink.Events, e => e.Level >= LogEventLevel.Error);
    }

    [Fact]
    public async Task Meta_variables_and_a_clean_environment()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri("http://a.localhost/cgi-bin/env.sh/extra/path%20x?a=1&b=two"))
        {
            Content = new StringContent("hello=world", Encoding.ASCII, "application/x-www-form-urlencoded"),
        };
        request.Headers.Add("X-Test", "test-value");
        request.Headers.Add("Proxy", "http://evil.example:3128");
        using var response = await _client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
        var env = text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split('=', 2))
            .Where(pair => pair.Length == 2)
            .ToDictionary(pair => pair[0], pair => pair[1], StringComparer.Ordinal);
        output.WriteLine(text);

        Assert.Equal("POST", env["REQUEST_METHOD"]);
        Assert.Equal("a=1&b=two", env["QUERY_STRING"]);
        Assert.Equal("/extra/path x", env["PATH_INFO"]);
        Assert.Equal(_dir.Combine("site") + "/extra/path x", env["PATH_TRANSLATED"]);
        Assert.Equal("/cgi-bin/env.sh", env["SCRIPT_NAME"]);
        Assert.Equal(Cgi + "/env.sh", env["SCRIPT_FILENAME"]);
        Assert.Equal("/cgi-bin/env.sh/extra/path%20x?a=1&b=two", env["REQUEST_URI"]);
        Assert.Equal("127.0.0.1", env["REMOTE_ADDR"]);
        Assert.True(int.Parse(env["REMOTE_PORT"], CultureInfo.InvariantCulture) > 0);
        Assert.Equal("test-value", env["HTTP_X_TEST"]);
        Assert.Equal("a.localhost", env["HTTP_HOST"]);
        Assert.Equal("11", env["CONTENT_LENGTH"]);
        Assert.StartsWith("application/x-www-form-urlencoded", env["CONTENT_TYPE"], StringComparison.Ordinal);
        Assert.Equal("CGI/1.1", env["GATEWAY_INTERFACE"]);
        Assert.Equal("a.localhost", env["SERVER_NAME"]);
        Assert.Equal(_harness.Port.ToString(CultureInfo.InvariantCulture), env["SERVER_PORT"]);
        Assert.Equal("HTTP/1.1", env["SERVER_PROTOCOL"]);
        Assert.Equal("Dispatch", env["SERVER_SOFTWARE"]);
        Assert.Equal(string.Empty, env["AUTH_TYPE"]);
        Assert.Equal("/usr/local/bin:/usr/bin:/bin", env["PATH"]);

        Assert.DoesNotContain("leaked-d81f", text, StringComparison.Ordinal);
        Assert.False(env.ContainsKey(LeakVariable));
        Assert.False(env.ContainsKey("HTTP_PROXY"), "httpoxy: the Proxy header must not become HTTP_PROXY");
        Assert.False(env.ContainsKey("HTTPS"));
        Assert.False(env.ContainsKey("HTTP_CONTENT_LENGTH"));

        // Only what we set (and what sh itself adds: PWD, and OLDPWD/SHLVL/_ depending on the shell).
        var ours = env.Keys.Where(k => k is not ("PWD" or "OLDPWD" or "SHLVL" or "_")).ToList();
        var allowed = new HashSet<string>(StringComparer.Ordinal)
        {
            "AUTH_TYPE", "CONTENT_LENGTH", "CONTENT_TYPE", "GATEWAY_INTERFACE", "PATH", "PATH_INFO", "PATH_TRANSLATED",
            "QUERY_STRING", "REMOTE_ADDR", "REMOTE_PORT", "REQUEST_METHOD", "REQUEST_URI", "SCRIPT_FILENAME", "SCRIPT_NAME",
            "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "SERVER_SOFTWARE",
        };
        Assert.All(ours, name => Assert.True(allowed.Contains(name) || name.StartsWith("HTTP_", StringComparison.Ordinal), name));
        Assert.Equal(Cgi, env["PWD"]);
    }

    [Fact]
    public async Task Header_names_with_underscores_are_not_passed_and_https_is_on_behind_tls()
    {
        _harness.Dispatcher.TlsProtocol = "TLSv1.3";
        var response = await RawConnection.RequestAsync(
            _harness.Port,
            "GET /cgi-bin/env.sh HTTP/1.0\r\nHost: a.localhost\r\nX_Forged: under\r\nX-Real: dash\r\n\r\n");
        Assert.Equal(200, response.Status);
        Assert.Contains("SERVER_PROTOCOL=HTTP/1.0", response.Text, StringComparison.Ordinal);
        Assert.Contains("HTTPS=on", response.Text, StringComparison.Ordinal);
        Assert.Contains("HTTP_X_REAL=dash", response.Text, StringComparison.Ordinal);
        Assert.DoesNotContain("under", response.Text, StringComparison.Ordinal);
        Assert.DoesNotContain("CONTENT_LENGTH", response.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Python_script_sets_status_and_headers()
    {
        if (!File.Exists(Python))
        {
            output.WriteLine($"SKIPPED LOUDLY: {Python} does not exist on this machine");
            Assert.Fail($"{Python} is required for this test");
        }

        using var response = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/created.py"));
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Equal("Created", response.ReasonPhrase);
        Assert.Equal("custom-value", Assert.Single(response.Headers.GetValues("X-Custom")));
        Assert.Equal(["a=1", "b=2"], response.Headers.GetValues("Set-Cookie"));
        Assert.Equal("nosniff", Assert.Single(response.Headers.GetValues("X-Content-Type-Options")));
        Assert.Equal("created by python\n", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Local_location_is_a_302_redirect()
    {
        using var response = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/redirect.sh"));
        Assert.Equal(HttpStatusCode.Found, response.StatusCode);
        Assert.Equal("/elsewhere/", response.Headers.Location?.OriginalString);
    }

    [Fact]
    public async Task Ten_mebibytes_posted_reach_stdin_intact()
    {
        var body = new byte[10 * 1024 * 1024];
        new Random(42).NextBytes(body);
        var expected = Convert.ToHexStringLower(SHA256.HashData(body));
        using var content = new ByteArrayContent(body);
        using var response = await _client.PostAsync(new Uri("http://a.localhost/cgi-bin/sha.sh"), content);
        var text = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(expected, text.Split(' ')[0]);
    }

    [Fact]
    public async Task Chunked_upload_without_content_length_is_streamed_to_stdin()
    {
        var body = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("chunk-data-", 50_000)));
        var expected = Convert.ToHexStringLower(SHA256.HashData(body));
        using var content = new StreamContent(new MemoryStream(body)); // no length: chunked
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri("http://a.localhost/cgi-bin/sha.sh")) { Content = content };
        request.Headers.TransferEncodingChunked = true;
        using var response = await _client.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(expected, (await response.Content.ReadAsStringAsync()).Split(' ')[0]);
    }

    [Fact]
    public async Task A_script_that_ignores_its_body_still_answers()
    {
        using var content = new ByteArrayContent(new byte[4 * 1024 * 1024]);
        using var response = await _client.PostAsync(new Uri("http://a.localhost/cgi-bin/ignore-body.sh"), content);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("ignored", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Failing_script_gives_502_and_its_stderr_is_logged()
    {
        using var response = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/fail.sh"));
        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.Equal("Bad Gateway: the CGI script failed\n", await response.Content.ReadAsStringAsync());
        var warnings = _harness.Sink.Events.Where(e => e.Level == LogEventLevel.Warning).Select(e => e.RenderMessage()).ToList();
        Assert.Contains(warnings, w => w.Contains("something broke: code 3", StringComparison.Ordinal) && w.Contains("stderr", StringComparison.Ordinal));
        Assert.Contains(warnings, w => w.Contains("exit status 3", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("/cgi-bin/noheader.sh")]
    [InlineData("/cgi-bin/badheader.sh")]
    [InlineData("/cgi-bin/hugeheader.sh")]
    [InlineData("/cgi-bin/nph-old.sh")]
    [InlineData("/cgi-bin/no-interpreter.sh")]
    [InlineData("/cgi-bin/garbage.bin")]
    public async Task Invalid_or_missing_header_block_gives_502(string path)
    {
        using var response = await _client.GetAsync(new Uri("http://a.localhost" + path));
        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        output.WriteLine(_harness.Sink.DumpProblems());
    }

    [Fact]
    public async Task Content_length_from_the_script_and_204()
    {
        using var withLength = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/length.sh"));
        Assert.Equal(5, withLength.Content.Headers.ContentLength);
        Assert.Equal("hello", await withLength.Content.ReadAsStringAsync());

        using var noContent = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/nocontent.sh"));
        Assert.Equal(HttpStatusCode.NoContent, noContent.StatusCode);

        var head = await RawConnection.RequestAsync(_harness.Port, "HEAD /cgi-bin/length.sh HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n", head: true);
        Assert.Equal(200, head.Status);
        Assert.Equal("5", head.Header("Content-Length"));
    }

    [Theory]
    [InlineData("/cgi-bin/escape.sh")] // symlink to a script outside the directory
    [InlineData("/cgi-bin/escapedir/evil.sh")] // symlinked directory leading outside
    [InlineData("/cgi-bin/..%2foutside/evil.sh")] // encoded separator
    [InlineData("/cgi-bin/%2e%2e/outside/evil.sh")] // encoded dot segment (normalised away by Kestrel)
    [InlineData("/cgi-bin/.htpasswd.sh")] // denied name
    [InlineData("/cgi-bin/missing.sh")]
    [InlineData("/cgi-bin/")]
    [InlineData("/cgi-bin/sub")]
    [InlineData("/cgi-bin/sub/")]
    [InlineData("/cgi-bin//tiny.sh")]
    public async Task Escapes_and_missing_scripts_are_404(string target)
    {
        var response = await RawConnection.RequestAsync(_harness.Port, $"GET {target} HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n");
        Assert.Equal(404, response.Status);
        Assert.DoesNotContain("ESCAPED", response.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Not_executable_is_403_and_symlinks_inside_and_subdirectories_work()
    {
        using var denied = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/not-executable.sh"));
        Assert.Equal(HttpStatusCode.Forbidden, denied.StatusCode);

        using var alias = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/alias.sh"));
        Assert.Equal("ok", await alias.Content.ReadAsStringAsync());

        using var deeper = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/sub/deeper.sh/more"));
        Assert.Equal("deeper:/more", await deeper.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task A_script_directory_inside_the_root_runs_but_its_source_is_never_served()
    {
        using var ran = await _client.GetAsync(new Uri("http://a.localhost/inside/inside.sh"));
        Assert.Equal("inside ran", await ran.Content.ReadAsStringAsync());

        using var source = await _client.GetAsync(new Uri("http://a.localhost/scripts/inside.sh"));
        Assert.Equal(HttpStatusCode.NotFound, source.StatusCode);
        Assert.DoesNotContain("#!/bin/sh", await source.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Only_stdio_is_inherited_and_the_working_directory_is_the_scripts()
    {
        using var response = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/fds.sh"));
        var text = await response.Content.ReadAsStringAsync();
        output.WriteLine(text);
        var fds = text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.All(char.IsAsciiDigit)).ToList();

        // 0, 1, 2 and the descriptor ls opens for /proc/self/fd itself.
        Assert.Equal(["0", "1", "2", "3"], fds);
        Assert.Contains("cwd=" + Cgi, text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Stdout_is_a_pipe_so_dev_stdout_works()
    {
        using var response = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/dev-stdout.sh"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("via-dev-stdout\n", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Hanging_script_and_its_children_are_killed_with_504()
    {
        var watch = Stopwatch.StartNew();
        using var response = await _client.GetAsync(new Uri("http://t.localhost/cgi-bin/hang.sh"));
        output.WriteLine($"504 after {watch.ElapsedMilliseconds} ms");
        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
        Assert.InRange(watch.Elapsed, TimeSpan.FromSeconds(1.2), TimeSpan.FromSeconds(10));

        var pids = File.ReadAllLines(_dir.Combine("hang.pids")).Select(l => int.Parse(l, CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(3, pids.Count);
        output.WriteLine("pids: " + string.Join(' ', pids));
        Assert.True(await Processes.AllGoneAsync(pids, TimeSpan.FromSeconds(5)), Processes.Describe(pids));
        Assert.False(Directory.Exists($"/proc/{pids[2]}"), "the script itself must be reaped, not left a zombie");
        Assert.Empty(Processes.InGroup(pids[2]));
        Assert.True(await WaitForAsync(() => _harness.Server.RunningCgiScripts == 0, TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Timeout_after_the_header_aborts_the_connection()
    {
        using var response = await _client.GetAsync(new Uri("http://t.localhost/cgi-bin/hang-after-header.sh"), HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        await using var stream = await response.Content.ReadAsStreamAsync();
        var buffer = new byte[64];
        var read = await stream.ReadAsync(buffer);
        Assert.Equal("started\n", Encoding.ASCII.GetString(buffer, 0, read));
        await Assert.ThrowsAnyAsync<IOException>(async () =>
        {
            while (await stream.ReadAsync(buffer) > 0)
            {
            }
        });
        var pid = int.Parse(File.ReadAllText(_dir.Combine("hang2.pid")).Trim(), CultureInfo.InvariantCulture);
        Assert.True(await Processes.AllGoneAsync([pid], TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Response_completes_when_output_ends_even_if_the_script_lingers()
    {
        // Not a stopwatch (a loaded machine makes any bound flaky): the script outlives its output until the 1.5 s
        // timeout kills it, and a timeout after the header aborts the connection (see above). A response that
        // arrives whole therefore ended with the output, not with the script.
        using var response = await _client.GetAsync(new Uri("http://t.localhost/cgi-bin/lingers.sh"));
        Assert.Equal("done", await response.Content.ReadAsStringAsync());
        var pid = int.Parse(File.ReadAllText(_dir.Combine("linger.pid")).Trim(), CultureInfo.InvariantCulture);
        Assert.True(await Processes.AllGoneAsync([pid], TimeSpan.FromSeconds(5)), "killed at the timeout");
    }

    [Fact]
    public async Task Client_disconnect_mid_output_kills_the_script()
    {
        var connection = await RawConnection.ConnectAsync(_harness.Port);
        await connection.SendAsync("GET /cgi-bin/stream.sh HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.True(await WaitForAsync(() => File.Exists(_dir.Combine("stream.pid")), TimeSpan.FromSeconds(5)));
        await Task.Delay(200); // some output flows
        var pid = int.Parse(File.ReadAllText(_dir.Combine("stream.pid")).Trim(), CultureInfo.InvariantCulture);
        Assert.True(Processes.IsAlive(pid));
        await connection.DisposeAsync();
        Assert.True(await Processes.AllGoneAsync([pid], TimeSpan.FromSeconds(5)), Processes.Describe([pid]));
        Assert.True(await WaitForAsync(() => _harness.Server.RunningCgiScripts == 0, TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Client_disconnect_while_the_script_is_silent_kills_it()
    {
        var connection = await RawConnection.ConnectAsync(_harness.Port);
        await connection.SendAsync("GET /cgi-bin/silent.sh HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.True(await WaitForAsync(() => File.Exists(_dir.Combine("silent.pid")) && File.ReadAllText(_dir.Combine("silent.pid")).Length > 0, TimeSpan.FromSeconds(5)));
        var pid = int.Parse(File.ReadAllText(_dir.Combine("silent.pid")).Trim(), CultureInfo.InvariantCulture);
        await connection.DisposeAsync();
        var watch = Stopwatch.StartNew();
        Assert.True(await Processes.AllGoneAsync([pid], TimeSpan.FromSeconds(10)), Processes.Describe([pid]));
        output.WriteLine($"silent script killed {watch.ElapsedMilliseconds} ms after the client closed");
    }

    [Fact]
    public async Task Output_beyond_the_limit_aborts()
    {
        using var response = await _client.GetAsync(new Uri("http://m.localhost/cgi-bin/big.sh"), HttpCompletionOption.ResponseHeadersRead);
        await using var stream = await response.Content.ReadAsStreamAsync();
        long total = 0;
        var buffer = new byte[65536];
        await Assert.ThrowsAnyAsync<IOException>(async () =>
        {
            int n;
            while ((n = await stream.ReadAsync(buffer)) > 0)
            {
                total += n;
            }
        });
        // Aborted: what was in flight may be lost, but never more than the limit (plus one read) arrives.
        output.WriteLine($"received {total} bytes before the abort");
        Assert.InRange(total, 1, 1_000_000);
    }

    [Fact]
    public async Task The_access_log_counts_the_bytes_of_a_streamed_response_and_of_an_aborted_one_and_keeps_the_raw_target()
    {
        // No Content-Length from the script: sent chunked, yet logged with its size (it was "-").
        using (var response = await _client.GetAsync(new Uri("http://a.localhost/cgi-bin/sized.sh?n=%2F%22&x")))
        {
            Assert.True(response.Headers.TransferEncodingChunked);
            Assert.Equal(300001, (await response.Content.ReadAsByteArrayAsync()).Length);
        }

        var streamed = await WaitForEventAsync(e => CollectingSink.Scalar(e, "Path") == "/cgi-bin/sized.sh");
        Assert.Equal("300001", CollectingSink.Scalar(streamed, "Bytes"));
        Assert.Equal("/cgi-bin/sized.sh?n=%2F%22&x", CollectingSink.Scalar(streamed, "Target"));

        // Aborted after the vhost's 1,000,000-byte output limit: what was sent before the abort, never the declared
        // nothing and never more than the limit.
        using (var response = await _client.GetAsync(new Uri("http://m.localhost/cgi-bin/big.sh"), HttpCompletionOption.ResponseHeadersRead))
        {
            await using var stream = await response.Content.ReadAsStreamAsync();
            var buffer = new byte[65536];
            await Assert.ThrowsAnyAsync<IOException>(async () =>
            {
                while (await stream.ReadAsync(buffer) > 0)
                {
                }
            });
        }

        var aborted = await WaitForEventAsync(e => CollectingSink.Scalar(e, "Vhost") == "m.localhost" && CollectingSink.Scalar(e, "Path") == "/cgi-bin/big.sh");
        output.WriteLine($"aborted response logged with {CollectingSink.Scalar(aborted, "Bytes")} bytes");
        Assert.InRange(long.Parse(CollectingSink.Scalar(aborted, "Bytes")!, CultureInfo.InvariantCulture), 1, 1_000_000);
    }

    private async Task<LogEvent> WaitForEventAsync(Func<LogEvent, bool> match)
    {
        LogEvent? found = null;
        Assert.True(await WaitForAsync(() => (found = _harness.Sink.AccessEvents.FirstOrDefault(match)) is not null, TimeSpan.FromSeconds(10)), "no such access-log event");
        return found!;
    }

    [Fact]
    public async Task Beyond_the_process_limit_503()
    {
        var first = _client.GetAsync(new Uri("http://l.localhost/cgi-bin/slow.sh"));
        var second = _client.GetAsync(new Uri("http://l.localhost/cgi-bin/slow.sh"));
        Assert.True(await WaitForAsync(() => _harness.Server.RunningCgiScripts == 2, TimeSpan.FromSeconds(5)));
        using var third = await _client.GetAsync(new Uri("http://l.localhost/cgi-bin/tiny.sh"));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, third.StatusCode);
        Assert.Equal("1", third.Headers.RetryAfter?.Delta?.TotalSeconds.ToString(CultureInfo.InvariantCulture));
        using var r1 = await WithDiagnosticsAsync(first);
        using var r2 = await WithDiagnosticsAsync(second);
        Assert.Equal("slow", await r1.Content.ReadAsStringAsync());
        Assert.Equal("slow", await r2.Content.ReadAsStringAsync());

        // A script counts until it is reaped, which follows its response (the client can have both answers while the
        // runs still collect their exits): a place is free once both are.
        Assert.True(await WaitForAsync(() => _harness.Server.RunningCgiScripts == 0, TimeSpan.FromSeconds(10)), $"{_harness.Server.RunningCgiScripts} scripts still counted");
        using var after = await _client.GetAsync(new Uri("http://l.localhost/cgi-bin/tiny.sh"));
        Assert.Equal(HttpStatusCode.OK, after.StatusCode);
    }

    /// <summary>
    /// A response expected within seconds (the scripts sleep 2 s); if it has not come within 25 s (before the client's
    /// own 30 s timeout), the failure says what the worker's children and CGI reactor looked like at that moment.
    /// </summary>
    private async Task<HttpResponseMessage> WithDiagnosticsAsync(Task<HttpResponseMessage> response)
    {
        try
        {
            return await response.WaitAsync(TimeSpan.FromSeconds(25));
        }
        catch (TimeoutException)
        {
            Assert.Fail($"no response within 25 s; running scripts {_harness.Server.RunningCgiScripts}, reactor registrations "
                + $"{FdReactor.Shared.Registered}; children: {Processes.DescribeChildren()}");
            throw;
        }
    }

    [Fact]
    public async Task Curl_over_http1_and_http2()
    {
        var resolve = $"a.localhost:{_harness.Port}:127.0.0.1";
        var url = $"http://a.localhost:{_harness.Port}/cgi-bin/env.sh/p?x=y";
        var h1 = await Curl.RunAsync("-i", "--resolve", resolve, "-d", "k=v", "-H", "X-Test: curl", url);
        Assert.Equal(0, h1.ExitCode);
        Assert.Equal(200, h1.Status);
        Assert.Contains("HTTP_X_TEST=curl", h1.Output, StringComparison.Ordinal);
        Assert.Contains("CONTENT_LENGTH=3", h1.Output, StringComparison.Ordinal);
        Assert.Contains("transfer-encoding: chunked", h1.Output, StringComparison.OrdinalIgnoreCase);

        _harness.Dispatcher.Protocol = HandedProtocol.Http2;
        _harness.Dispatcher.ReadInitial = InitialRead.Exactly(24);
        var h2 = await Curl.RunAsync("-i", "--http2-prior-knowledge", "--resolve", resolve, "-d", "k=v", url);
        Assert.Equal(0, h2.ExitCode);
        Assert.StartsWith("HTTP/2 200", h2.Output, StringComparison.Ordinal);
        Assert.Contains("SERVER_PROTOCOL=HTTP/2", h2.Output, StringComparison.Ordinal);
        Assert.Contains("PATH_INFO=/p", h2.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Stopping_the_server_kills_running_scripts()
    {
        var connection = await RawConnection.ConnectAsync(_harness.Port);
        await connection.SendAsync("GET /cgi-bin/silent.sh HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.True(await WaitForAsync(() => File.Exists(_dir.Combine("silent.pid")) && File.ReadAllText(_dir.Combine("silent.pid")).Length > 0, TimeSpan.FromSeconds(5)));
        var pid = int.Parse(File.ReadAllText(_dir.Combine("silent.pid")).Trim(), CultureInfo.InvariantCulture);
        Assert.True(Processes.IsAlive(pid));
        await _harness.Server.StopAsync(TimeSpan.FromMilliseconds(200));
        Assert.True(await Processes.AllGoneAsync([pid], TimeSpan.FromSeconds(5)), Processes.Describe([pid]));
        await connection.DisposeAsync();
    }

    [Fact]
    public async Task A_body_over_kestrels_limit_is_413_before_the_header_and_an_abort_after_it()
    {
        // The vhost's maxBodySize defaults to 32 MiB (33,554,432 bytes); a chunked body fails only once past it.
        // sha-first.sh reads all of stdin before it writes its header: the client gets 413.
        using (var response = await PostTooLargeAsync("/cgi-bin/sha-first.sh"))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response?.StatusCode ?? HttpStatusCode.RequestEntityTooLarge);
        }

        // sha.sh writes its header first: the 200 is out, so the only honest end is an aborted response, never a
        // complete-looking one (and the script, killed, never reads an end of file after a truncated body).
        using var started = await PostTooLargeAsync("/cgi-bin/sha.sh");
        if (started is not null)
        {
            Assert.Equal(HttpStatusCode.OK, started.StatusCode);
            await Assert.ThrowsAnyAsync<Exception>(async () => await started.Content.ReadAsByteArrayAsync());
        }

        Assert.Contains(_harness.Sink.Events, e => e.RenderMessage().Contains("request body failed after the response started", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Output_beyond_the_limit_while_the_body_is_still_coming_aborts_and_cleans_up()
    {
        // The body's read is still waiting when the run ends with an abort of its own (the output limit): ending that
        // read must not fail on the aborted connection and skip the run's clean-up (a CI run leaked a script's three
        // descriptors that way, through the abort for a failed body, a race).
        await using var connection = await RawConnection.ConnectAsync(_harness.Port);
        await connection.SendAsync("POST /cgi-bin/big.sh HTTP/1.1\r\nHost: m.localhost\r\nContent-Length: 1000000\r\n\r\n0123456789");
        var received = await connection.DrainAsync(TimeSpan.FromSeconds(20));
        Assert.InRange(received, 1, 1_100_000);
        Assert.Contains(_harness.Sink.Events, e => e.RenderMessage().Contains("exceeded 1000000 bytes of output", StringComparison.Ordinal));
        Assert.True(await WaitForAsync(() => _harness.Server.RunningCgiScripts == 0, TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Many_concurrent_scripts_all_answer_and_leave_nothing_behind()
    {
        const int Requests = 300;
        const int Concurrency = 24;
        var watch = Stopwatch.StartNew();
        var failures = 0;
        await Parallel.ForEachAsync(Enumerable.Range(0, Requests), new ParallelOptions { MaxDegreeOfParallelism = Concurrency }, async (i, ct) =>
        {
            var path = (i % 3) switch { 0 => "/cgi-bin/tiny.sh", 1 => "/cgi-bin/sub/deeper.sh/x" + i, _ => "/cgi-bin/length.sh" };
            using var response = await _client.GetAsync(new Uri("http://a.localhost" + path), ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            if (response.StatusCode != HttpStatusCode.OK || text is not ("ok" or "hello") && text != "deeper:/x" + i)
            {
                Interlocked.Increment(ref failures);
            }
        });
        output.WriteLine($"{Requests} CGI requests, {Concurrency} at a time: {watch.ElapsedMilliseconds} ms ({Requests / watch.Elapsed.TotalSeconds:F0}/s)");
        Assert.Equal(0, failures);
        Assert.True(await WaitForAsync(() => _harness.Server.RunningCgiScripts == 0, TimeSpan.FromSeconds(5)));
    }

    [Fact]
    public async Task Silent_scripts_hold_no_thread_and_static_files_are_served_meanwhile()
    {
        // A handler that blocked its thread while a script is silent would leave other connections waiting for the
        // thread pool to grow (about two threads a second); so would an inline-scheduled transport (Kestrel's
        // UnsafePreferInlineScheduling with inline socket completions) if anything on the request path blocked.
        const int Silent = 30;
        using var cancel = new CancellationTokenSource();
        var pending = Enumerable.Range(0, Silent)
            .Select(_ => _client.GetAsync(new Uri("http://a.localhost/cgi-bin/quiet.sh"), cancel.Token))
            .ToList();
        try
        {
            // Timed from the moment the scripts are asked for: blocked threads would be replaced only slowly.
            var watch = Stopwatch.StartNew();
            Assert.True(await WaitForAsync(() => _harness.Server.RunningCgiScripts > 0, TimeSpan.FromSeconds(20)));
            for (var i = 0; i < 20; i++)
            {
                using var response = await _client.GetAsync(new Uri("http://a.localhost/index.html"));
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            }

            output.WriteLine($"20 static requests while {Silent} silent scripts start: {watch.ElapsedMilliseconds} ms");
            Assert.True(watch.Elapsed < TimeSpan.FromSeconds(6), $"{watch.ElapsedMilliseconds} ms");
            Assert.True(await WaitForAsync(() => _harness.Server.RunningCgiScripts == Silent, TimeSpan.FromSeconds(20)));
        }
        finally
        {
            await cancel.CancelAsync();
            foreach (var request in pending)
            {
                await Assert.ThrowsAnyAsync<OperationCanceledException>(() => request);
            }
        }

        Assert.True(await WaitForAsync(() => _harness.Server.RunningCgiScripts == 0, TimeSpan.FromSeconds(10)));
    }

    /// <summary>A chunked 34 MB POST (over the default maxBodySize); null when the server closed the connection before the client could read a response.</summary>
    private async Task<HttpResponseMessage?> PostTooLargeAsync(string path)
    {
        using var content = new StreamContent(new MemoryStream(new byte[34_000_000]));
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri("http://a.localhost" + path)) { Content = content };
        request.Headers.TransferEncodingChunked = true;
        try
        {
            return await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        }
        catch (HttpRequestException e)
        {
            output.WriteLine($"{path}: connection closed while sending: {e.Message}");
            return null;
        }
    }

    private static async Task<bool> WaitForAsync(Func<bool> condition, TimeSpan timeout)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < timeout)
        {
            if (condition())
            {
                return true;
            }

            await Task.Delay(20);
        }

        return condition();
    }

    private void Script(string relative, string content)
    {
        var path = _dir.Write(relative, content);
        File.SetUnixFileMode(path, (UnixFileMode)0x1ed); // 0755
    }
}

/// <summary>Looks at processes through /proc.</summary>
internal static class Processes
{
    /// <summary>Alive and not a zombie. A zombie whose parent is not this process is dead for our purposes (a
    /// reparented orphan awaiting a reaper that is not ours).</summary>
    public static bool IsAlive(int pid)
    {
        var stat = ReadStat(pid);
        return stat is not null && !(stat.Value.State == 'Z' && stat.Value.ParentPid != Environment.ProcessId);
    }

    public static async Task<bool> AllGoneAsync(IReadOnlyList<int> pids, TimeSpan timeout)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < timeout)
        {
            if (!pids.Any(IsAlive))
            {
                return true;
            }

            await Task.Delay(20);
        }

        return !pids.Any(IsAlive);
    }

    /// <summary>Zombie processes whose parent is this process (children nobody reaped).</summary>
    public static List<int> ZombieChildren()
    {
        var zombies = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
                && ReadStat(pid) is { State: 'Z' } stat && stat.ParentPid == Environment.ProcessId)
            {
                zombies.Add(pid);
            }
        }

        return zombies;
    }

    /// <summary>Live members of a process group.</summary>
    public static List<int> InGroup(int pgid)
    {
        var members = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
                && ReadStat(pid) is { } stat && stat.Group == pgid && stat.State != 'Z')
            {
                members.Add(pid);
            }
        }

        return members;
    }

    /// <summary>This process's children (state, process group, command line): what a hung test shows when it fails.</summary>
    public static string DescribeChildren()
    {
        var lines = new List<string>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
                && ReadStat(pid) is { } stat && stat.ParentPid == Environment.ProcessId)
            {
                string command;
                try
                {
                    command = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
                }
                catch (IOException)
                {
                    command = "?";
                }

                lines.Add($"{pid}: state {stat.State} group {stat.Group} {command}");
            }
        }

        return lines.Count == 0 ? "no children" : string.Join("; ", lines);
    }

    public static string Describe(IEnumerable<int> pids) =>
        string.Join("; ", pids.Select(pid => ReadStat(pid) is { } s ? $"{pid}: state {s.State} ppid {s.ParentPid}" : $"{pid}: gone"));

    private static (char State, int ParentPid, int Group)? ReadStat(int pid)
    {
        string text;
        try
        {
            text = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }

        // pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
        var fields = text[(text.LastIndexOf(')') + 2)..].Split(' ');
        return (fields[0][0], int.Parse(fields[1], CultureInfo.InvariantCulture), int.Parse(fields[2], CultureInfo.InvariantCulture));
    }
}
