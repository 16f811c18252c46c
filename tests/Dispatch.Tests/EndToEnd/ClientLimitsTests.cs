using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// The dispatcher's per-address connection limit, with loopback aliases as distinct clients: beyond it plain HTTP gets
/// 429 and TLS is closed, other addresses are served, the address is served again once its connections end, and the
/// refusals are logged in summary.
/// </summary>
public sealed class ClientLimitsTests : IDisposable
{
    private const int PerAddress = 3;
    private readonly ITestOutputHelper _output;
    private readonly List<IDisposable> _cleanup = [];

    public ClientLimitsTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public async Task Connections_beyond_the_per_address_limit_are_refused_and_other_addresses_are_served()
    {
        var site = TwoTenantSite.Create("client-limits", "tenant A", "tenant B");
        site.Terminate("b");
        var config = site.Config;
        var tlsPort = site.TlsPort;
        config["dispatcher"]!["headerTimeout"] = "60s";
        config["dispatcher"]!["handshakeTimeout"] = "60s";
        config["dispatcher"]!["limits"] = new JsonObject { ["perAddress"] = new JsonObject { ["connections"] = PerAddress } };
        var d = site.StartReady(_output);
        _cleanup.Add(d);
        var http = $"http://127.0.0.1:{d.HttpPort}/";

        // Plain HTTP: three idle connections from 127.0.0.2 fill its share; the fourth gets 429.
        var idle = new List<Socket>();
        for (var i = 0; i < PerAddress; i++)
            idle.Add(await ConnectFromAsync("127.0.0.2", d.HttpPort));
        using (var fourth = await ConnectFromAsync("127.0.0.2", d.HttpPort))
        {
            await fourth.SendAsync(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n"), SocketFlags.None);
            var answer = await ReadAllAsync(fourth);
            Assert.StartsWith("HTTP/1.1 429 Too Many Requests", answer, StringComparison.Ordinal);
        }

        // Another address is served meanwhile.
        var other = Tools.Run("curl", "-sS", "--interface", "127.0.0.3", "-H", "Host: a.localhost", http);
        Assert.True(other.ExitCode == 0, other.Stderr);
        Assert.Equal("tenant A", other.Stdout);

        // TLS: three idle connections from 127.0.0.4; the fourth is closed without a handshake; 127.0.0.5 is served.
        for (var i = 0; i < PerAddress; i++)
            idle.Add(await ConnectFromAsync("127.0.0.4", tlsPort));
        string[] tls = ["-sS", "--cacert", TestWorld.CaPath, "--resolve", $"b.localhost:{tlsPort}:127.0.0.1", $"https://b.localhost:{tlsPort}/"];
        var refused = Tools.Run("curl", ["--interface", "127.0.0.4", .. tls]);
        _output.WriteLine($"TLS over the limit: curl exit {refused.ExitCode}: {refused.Stderr}");
        Assert.NotEqual(0, refused.ExitCode);
        var served = Tools.Run("curl", ["--interface", "127.0.0.5", .. tls]);
        Assert.True(served.ExitCode == 0, served.Stderr);
        Assert.Equal("tenant B", served.Stdout);

        // Refusals are reported in summary (not one line per connection).
        d.WaitForLine(new Regex(@"Refused \d+ connection\(s\) over the client limits .*most from 127\.0\.0\.[24]"));

        // Once its connections end, the address is served again.
        foreach (var s in idle)
            s.Dispose();
        Assert.True(
            Tools.Eventually(() => Tools.Run("curl", "-sS", "--interface", "127.0.0.2", "-H", "Host: a.localhost", http).Stdout == "tenant A"),
            "127.0.0.2 was not served again after its connections closed");
        Assert.True(Tools.Eventually(() => Tools.Run("curl", ["--interface", "127.0.0.4", .. tls]).Stdout == "tenant B"), "127.0.0.4 was not served again over TLS");
    }

    private static async Task<Socket> ConnectFromAsync(string source, int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Parse(source), 0));
        await socket.ConnectAsync(IPAddress.Loopback, port);
        return socket;
    }

    private static async Task<string> ReadAllAsync(Socket socket)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var buffer = new byte[4096];
        var text = new StringBuilder();
        try
        {
            int n;
            while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token)) > 0)
                text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }
        catch (SocketException)
        {
            // A reset after the answer leaves what was read.
        }

        return text.ToString();
    }

    public void Dispose()
    {
        foreach (var c in _cleanup)
            c.Dispose();
    }
}
