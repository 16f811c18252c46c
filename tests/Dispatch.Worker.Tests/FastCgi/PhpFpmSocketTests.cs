using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Dispatch.Worker.FastCgi;
using Dispatch.Worker.Tests.Support;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests.FastCgi;

/// <summary>
/// A PHP front-controller application through a real php-fpm on an operator-run socket (Debian's php8.2-fpm, started
/// by the test as <c>nobody</c>, the way an operator runs a pool): routing, static files, PATH_INFO, a 50 MB upload.
/// </summary>
public sealed class PhpFpmSocketTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TempDir _dir = new();
    private Process? _fpm;
    private Harness _harness = null!;
    private HttpClient _client = null!;

    public async Task InitializeAsync()
    {
        Assert.True(File.Exists(PhpApp.PhpFpm), $"{PhpApp.PhpFpm} is missing: apt-get install -y php8.2-fpm php8.2-cli");
        File.SetUnixFileMode(_dir.Path, (UnixFileMode)0b111_101_101);
        foreach (var (name, content) in PhpApp.Files)
        {
            _dir.Write("site/" + name, content);
        }

        var run = _dir.MakeDirectory("run");
        Chown(run, 65534);
        var socket = Path.Combine(run, "php.sock");
        var conf = _dir.Write("fpm.conf", $"""
            [global]
            daemonize = no
            error_log = /dev/null
            [site]
            listen = {socket}
            listen.mode = 0600
            pm = ondemand
            pm.max_children = 4
            catch_workers_output = yes
            php_admin_value[post_max_size] = 64M
            """);
        _fpm = Process.Start(new ProcessStartInfo("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--pdeathsig", "KILL", "--", PhpApp.PhpFpm, "-F", "-O", "-y", conf])
        {
            RedirectStandardError = true,
            UseShellExecute = false,
        })!;
        _fpm.ErrorDataReceived += (_, e) => output.WriteLine("php-fpm: " + e.Data);
        _fpm.BeginErrorReadLine();
        Assert.True(await ConnectableAsync(socket), "php-fpm did not listen within 20 s");

        _harness = await Harness.StartAsync(
            Harness.Vhost("php.localhost", _dir.Combine("site"), index: ["index.php", "index.html"]) with
            {
                FastCgi = new Dispatch.Wire.Payloads.FastCgiRoute(socket, TimeSpan.Zero, TimeSpan.Zero, null),
                Web = Dispatch.Wire.Payloads.VhostWeb.Default with { MaxBodySize = 64L << 20 },
                TryFiles = ["$uri", "$uri/", "/index.php"],
            });
        _client = _harness.CreateClient();
    }

    public async Task DisposeAsync()
    {
        _client?.Dispose();
        if (_harness is not null)
        {
            await _harness.DisposeAsync();
        }

        if (_fpm is { HasExited: false })
        {
            _fpm.Kill(entireProcessTree: true);
            await _fpm.WaitForExitAsync();
        }

        _fpm?.Dispose();
        _dir.Dispose();
    }

    [Fact]
    public async Task The_front_controller_routes_permalinks_static_files_are_served_and_php_source_is_not()
    {
        var post = await _client.GetAsync("http://php.localhost/2024/hello-world?utm=x");
        var text = await post.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, post.StatusCode);
        Assert.StartsWith("post hello-world of 2024\nscript=/index.php uri=/2024/hello-world?utm=x uid=65534\n", text, StringComparison.Ordinal);
        Assert.Equal("post", post.Headers.GetValues("X-Route").Single());

        var none = await _client.GetAsync("http://php.localhost/nothing/here");
        Assert.Equal(HttpStatusCode.NotFound, none.StatusCode);
        Assert.StartsWith("no route for /nothing/here\n", await none.Content.ReadAsStringAsync(), StringComparison.Ordinal);

        Assert.Equal("body { color: green }", await _client.GetStringAsync("http://php.localhost/style.css"));
        Assert.Equal("docs index", await _client.GetStringAsync("http://php.localhost/docs/"));

        // The directory "/" has index.php: it runs (and says it found no route for "/").
        var home = await _client.GetAsync("http://php.localhost/");
        Assert.Contains("script=/index.php uri=/ ", await home.Content.ReadAsStringAsync(), StringComparison.Ordinal);

        var info = await _client.GetStringAsync("http://php.localhost/info.php/extra/path");
        Assert.Contains("path_info=/extra/path\n", info, StringComparison.Ordinal);
        Assert.Contains("remote=127.0.0.1 server=php.localhost", info, StringComparison.Ordinal);
        Assert.Contains(_harness.Sink.Events, e => e.RenderMessage().Contains("info.php was here", StringComparison.Ordinal));

        Assert.Equal(HttpStatusCode.NotFound, (await _client.GetAsync("http://php.localhost/missing.php")).StatusCode);
        var index = await (await _client.GetAsync("http://php.localhost/index.php")).Content.ReadAsStringAsync();
        Assert.StartsWith("no route for /index.php\n", index, StringComparison.Ordinal); // run, not shown
    }

    [Fact]
    public async Task A_50_MB_upload_arrives_intact()
    {
        var body = RandomNumberGenerator.GetBytes(50 * 1024 * 1024);
        using var content = new StreamContent(new MemoryStream(body));
        content.Headers.ContentLength = body.Length;
        content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/octet-stream");
        using var response = await _client.PostAsync("http://php.localhost/upload", content);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal($"posted {body.Length} {Convert.ToHexStringLower(SHA256.HashData(body))}\n", await response.Content.ReadAsStringAsync());
    }

    private static void Chown(string path, uint uid)
    {
        var result = Process.Start("chown", [$"{uid}:{uid}", path]);
        result.WaitForExit();
        Assert.Equal(0, result.ExitCode);
    }

    private static async Task<bool> ConnectableAsync(string path)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(20))
        {
            if (File.Exists(path))
            {
                using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await probe.ConnectAsync(new UnixDomainSocketEndPoint(path));
                    return true;
                }
                catch (SocketException)
                {
                }
            }

            await Task.Delay(20);
        }

        return false;
    }
}
