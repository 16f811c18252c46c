using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;

namespace Dispatch.Worker.Tests;

/// <summary>A real third-party client: curl against the fake dispatcher.</summary>
public sealed class CurlTests : IAsyncLifetime
{
    private const string Secret = "TOP-SECRET-c7d2";
    private readonly TempDir _dir = new();
    private Harness _harness = null!;

    public async Task InitializeAsync()
    {
        _dir.Write("secret/secret.txt", Secret);
        _dir.Write("site/index.html", "<h1>curl home</h1>");
        _dir.Write("site/ten.txt", "0123456789");
        _dir.Symlink("site/leak.txt", _dir.Combine("secret/secret.txt"));
        _harness = await Harness.StartAsync(Harness.Vhost("a.localhost", _dir.Combine("site")));
    }

    public async Task DisposeAsync()
    {
        await _harness.DisposeAsync();
        _dir.Dispose();
    }

    private string Url(string path) => $"http://a.localhost:{_harness.Port}{path}";

    private string Resolve => $"a.localhost:{_harness.Port}:127.0.0.1";

    [Fact]
    public async Task Index_over_http1_with_the_head_read_by_the_dispatcher()
    {
        _harness.Dispatcher.ReadInitial = InitialRead.Head;
        var result = await Curl.RunAsync("-v", "-i", "--resolve", Resolve, Url("/"), Url("/ten.txt"));
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("HTTP/1.1 200 OK", result.Output, StringComparison.Ordinal);
        Assert.Contains("<h1>curl home</h1>", result.Output, StringComparison.Ordinal);
        Assert.EndsWith("0123456789", result.Output, StringComparison.Ordinal);
        Assert.Contains("Re-using existing connection", result.Error, StringComparison.Ordinal);
        Assert.Single(_harness.Dispatcher.Handed);
    }

    [Fact]
    public async Task Http2_prior_knowledge()
    {
        _harness.Dispatcher.Protocol = HandedProtocol.Http2;
        _harness.Dispatcher.ReadInitial = InitialRead.Exactly(24);
        var result = await Curl.RunAsync("-i", "--http2-prior-knowledge", "--resolve", Resolve, Url("/ten.txt"));
        Assert.Equal(0, result.ExitCode);
        Assert.StartsWith("HTTP/2 200", result.Output, StringComparison.Ordinal);
        Assert.Contains("x-content-type-options: nosniff", result.Output, StringComparison.Ordinal);
        Assert.EndsWith("0123456789", result.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Range_and_not_satisfiable()
    {
        var result = await Curl.RunAsync("-i", "--resolve", Resolve, "-r", "3-5", Url("/ten.txt"));
        Assert.Equal(206, result.Status);
        Assert.Contains("content-range: bytes 3-5/10", result.Output, StringComparison.OrdinalIgnoreCase);
        Assert.EndsWith("345", result.Output, StringComparison.Ordinal);

        result = await Curl.RunAsync("-i", "--resolve", Resolve, "-r", "50-60", Url("/ten.txt"));
        Assert.Equal(416, result.Status);
    }

    [Theory]
    [InlineData("/../secret/secret.txt")]
    [InlineData("/%2e%2e/secret/secret.txt")]
    [InlineData("/..%2fsecret%2fsecret.txt")]
    [InlineData("/leak.txt")]
    public async Task Traversal_with_path_as_is(string path)
    {
        var result = await Curl.RunAsync("-i", "--path-as-is", "--resolve", Resolve, Url(path));
        Assert.Equal(0, result.ExitCode);
        Assert.True(result.Status is 400 or 404, result.Output);
        Assert.DoesNotContain(Secret, result.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Unknown_host_is_421()
    {
        var result = await Curl.RunAsync("-i", "--resolve", $"nope.localhost:{_harness.Port}:127.0.0.1", $"http://nope.localhost:{_harness.Port}/");
        Assert.Equal(421, result.Status);
        Assert.Contains("connection: close", result.Output, StringComparison.OrdinalIgnoreCase);
    }
}
