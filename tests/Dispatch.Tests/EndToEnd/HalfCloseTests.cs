using System.Text;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// A plain-HTTP client that sends its request and then shuts down its sending side (<c>nc -N</c>,
/// <c>shutdown(SHUT_WR)</c>) still gets its response, as nginx gives it.
/// </summary>
public sealed class HalfCloseTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public HalfCloseTests(ITestOutputHelper output) => _output = output;

    private DispatchInstance Start()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("half-close");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string>
        {
            ["index.html"] = "<h1>tenant A home</h1>",
            ["big.txt"] = new string('a', 300_000),
        });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        return _dispatch = DispatchInstance.StartReady(dir, DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b), _output);
    }

    [SkippableFact]
    public void Netcat_with_N_gets_the_response_to_a_request_it_half_closed_after()
    {
        var d = Start();
        Assert.True(File.Exists("/usr/bin/nc"), "nc (netcat-openbsd) is needed: .ci/run installs it");
        foreach (var version in new[] { "1.1", "1.0" })
        {
            var run = Tools.RunWithInput($"GET / HTTP/{version}\r\nHost: a.localhost\r\n\r\n", "/usr/bin/nc", "-N", "-w", "30", "127.0.0.1", d.HttpPort.ToString(System.Globalization.CultureInfo.InvariantCulture));
            _output.WriteLine($"HTTP/{version}: exit {run.ExitCode}\n{run.Stdout}\n{run.Stderr}");
            Assert.StartsWith("HTTP/1.1 200", run.Stdout, StringComparison.Ordinal);
            Assert.Contains("tenant A home", run.Stdout, StringComparison.Ordinal);
        }
    }

    [SkippableFact]
    public async Task A_socket_shut_down_for_sending_gets_a_whole_large_response()
    {
        var d = Start();
        var response = await Tools.RawExchangeAsync(d.HttpPort, Encoding.ASCII.GetBytes("GET /big.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n"), halfClose: true);
        Assert.StartsWith("HTTP/1.1 200", response, StringComparison.Ordinal);
        var body = response[(response.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..];
        Assert.Equal(300_000, body.Length);
        Assert.All(body, c => Assert.Equal('a', c));
    }

    public void Dispose() => _dispatch?.Dispose();
}
