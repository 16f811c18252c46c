using System.Globalization;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// What an operator reads: <c>Master status</c> over the root-only control socket, the Prometheus
/// endpoint served by the dispatcher on loopback, and the master's JSON log file — each checked
/// against numbers this test produces itself.
/// </summary>
public sealed class OperationsTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public OperationsTests(ITestOutputHelper output) => _output = output;

    private static string Master => Path.Combine(TestWorld.AppDirectory, "Master");

    [SkippableFact]
    public async Task Status_and_metrics_show_the_connections_handshakes_workers_and_reloads_this_test_made()
    {
        var site = TwoTenantSite.Create("operations");
        var (dir, config, tlsPort) = (site.Directory, site.Config, site.TlsPort);
        var metricsPort = TestWorld.FreePort();
        var socket = Path.Combine(dir, "run", "control.sock");
        var jsonLog = Path.Combine(dir, "master.json");
        site.Terminate("b");
        config["control"] = new JsonObject { ["socket"] = socket };
        config["metrics"] = new JsonObject { ["listen"] = $"127.0.0.1:{metricsPort}" };
        config["log"] = new JsonObject { ["file"] = jsonLog, ["format"] = "json" };
        config["jailProbe"]!["threads"] = 4;
        var d = _dispatch = site.StartReady(_output);

        // The traffic: 7 plain requests to a, 3 HTTPS requests to b, 1 non-TLS connection on the TLS port.
        for (var i = 0; i < 7; i++)
            Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
        for (var i = 0; i < 3; i++)
            Assert.Equal(200, Tools.Curl("--cacert", TestWorld.CaPath, "--resolve", $"b.localhost:{tlsPort}:127.0.0.1", $"https://b.localhost:{tlsPort}/").Status);
        await Tools.RawExchangeAsync(tlsPort, "GET / HTTP/1.1\r\nHost: b.localhost\r\n\r\n"u8.ToArray());
        var workerA = d.WorkerPid("a");
        var workerB = d.WorkerPid("b");

        // status --json, over the control socket.
        var run = Tools.Run(Master, "status", "--json", "--socket", socket);
        Assert.True(run.ExitCode == 0, run.Stderr);
        using (var status = JsonDocument.Parse(run.Stdout))
        {
            var s = status.RootElement;
            Assert.Equal(d.MasterPid, s.GetProperty("master").GetProperty("pid").GetInt32());
            Assert.Equal(JsonValueKind.Null, s.GetProperty("lastReload").ValueKind);
            var dispatcher = Assert.Single(s.GetProperty("dispatchers").EnumerateArray());
            Assert.Equal(d.DispatcherPid, dispatcher.GetProperty("pid").GetInt32());
            Assert.Equal(TestWorld.DispatcherUid, dispatcher.GetProperty("uid").GetUInt32());
            Assert.Equal("serving", dispatcher.GetProperty("state").GetString());
            var counters = dispatcher.GetProperty("counters");
            Assert.Equal(7, counters.GetProperty($"dispatch_connections_accepted_total{{listener=\"http 127.0.0.1:{d.HttpPort}\"}}").GetInt64());
            Assert.Equal(4, counters.GetProperty($"dispatch_connections_accepted_total{{listener=\"tls 127.0.0.1:{tlsPort}\"}}").GetInt64());
            Assert.Equal(3, counters.GetProperty("dispatch_tls_handshakes_total{result=\"ok\"}").GetInt64());
            Assert.Equal(1, counters.GetProperty("dispatch_tls_handshakes_total{result=\"not_tls\"}").GetInt64());
            Assert.Equal(0, counters.GetProperty("dispatch_tls_handshakes_total{result=\"failed\"}").GetInt64());
            // The three sessions were handed to the worker whole: the dispatcher pumped no byte of them.
            Assert.Equal(3, counters.GetProperty("dispatch_tls_handed_total").GetInt64());
            Assert.Equal(0, counters.GetProperty("dispatch_tls_bytes_total{direction=\"sent\"}").GetInt64());

            var pools = s.GetProperty("pools").EnumerateArray().ToDictionary(p => p.GetProperty("name").GetString()!);
            var wa = Assert.Single(pools["a"].GetProperty("workers").EnumerateArray());
            Assert.Equal(workerA, wa.GetProperty("pid").GetInt32());
            Assert.Equal(TestWorld.TenantA, wa.GetProperty("uid").GetUInt32());
            Assert.Equal(7UL, wa.GetProperty("handed").GetUInt64());
            Assert.Equal(0U, wa.GetProperty("connections").GetUInt32());
            var wb = Assert.Single(pools["b"].GetProperty("workers").EnumerateArray());
            Assert.Equal(workerB, wb.GetProperty("pid").GetInt32());
            Assert.Equal(3UL, wb.GetProperty("handed").GetUInt64());

            var vhostB = s.GetProperty("vhosts").EnumerateArray().Single(v => v.GetProperty("name").GetString() == "b.localhost");
            var cert = Assert.Single(vhostB.GetProperty("certificates").EnumerateArray());
            var expected = X509CertificateLoader.LoadCertificateFromFile(Path.Combine(site.CertDir("b.localhost"), "cert.pem")).NotAfter.ToUniversalTime();
            Assert.Equal(expected, cert.GetProperty("notAfter").GetDateTime().ToUniversalTime(), TimeSpan.FromSeconds(1));
            Assert.Equal(1, s.GetProperty("counters").GetProperty("dispatch_worker_spawns_total{pool=\"a\",result=\"ok\"}").GetInt64());
        }

        // The text view names the same things.
        var text = Tools.Run(Master, "status", "--socket", socket);
        Assert.Equal(0, text.ExitCode);
        Assert.Contains($"worker pid {workerA}  uid {TestWorld.TenantA}", text.Stdout, StringComparison.Ordinal);
        _output.WriteLine(text.Stdout);

        // A reload through the socket, then a broken one: the status says what happened.
        var reload = Tools.Run(Master, "reload", "--socket", socket);
        Assert.Equal(0, reload.ExitCode);
        Assert.StartsWith("reloaded: version 2", reload.Stdout, StringComparison.Ordinal);
        config["vhosts"]!["a.localhost"]!["pool"] = "nosuchpool";
        File.WriteAllText(d.ConfigPath, config.ToJsonString());
        // The file watcher rejects it first (reloadOnChange); then the control socket's reload, on demand.
        d.WaitForLine(new Regex(@"Reload \(file changed\) rejected, the last good configuration keeps serving: .*vhosts:a.localhost:pool"));
        var broken = Tools.Run(Master, "reload", "--socket", socket);
        Assert.Equal(1, broken.ExitCode);
        Assert.Contains("vhosts:a.localhost:pool", broken.Stdout, StringComparison.Ordinal);
        using (var status = JsonDocument.Parse(Tools.Run(Master, "status", "--json", "--socket", socket).Stdout))
        {
            var last = status.RootElement.GetProperty("lastReload");
            Assert.Equal("rejected", last.GetProperty("result").GetString());
            Assert.Contains("vhosts:a.localhost:pool", last.GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        // The metrics endpoint: the same numbers, summed over dispatchers, plus the master's.
        using var http = new HttpClient();
        var metrics = await http.GetStringAsync(new Uri($"http://127.0.0.1:{metricsPort}/metrics"));
        _output.WriteLine(metrics);
        double Sample(string key)
        {
            var line = metrics.Split('\n').SingleOrDefault(l => l.StartsWith(key + " ", StringComparison.Ordinal)) ?? throw new Xunit.Sdk.XunitException($"no sample {key}");
            return double.Parse(line[(key.Length + 1)..], CultureInfo.InvariantCulture);
        }

        Assert.Equal(7, Sample($"dispatch_connections_accepted_total{{listener=\"http 127.0.0.1:{d.HttpPort}\"}}"));
        Assert.Equal(3, Sample("dispatch_tls_handshakes_total{result=\"ok\"}"));
        Assert.Equal(1, Sample("dispatch_tls_handshakes_total{result=\"not_tls\"}"));
        Assert.Equal(1, Sample("dispatch_worker_spawns_total{pool=\"a\",result=\"ok\"}"));
        Assert.Equal(1, Sample("dispatch_reloads_total{result=\"ok\"}"));
        Assert.Equal(2, Sample("dispatch_reloads_total{result=\"rejected\"}"));
        Assert.Equal(0, Sample("dispatch_last_reload_ok"));
        Assert.Equal(1, Sample("dispatch_workers{pool=\"a\"}"));
        Assert.Equal(0, Sample($"dispatch_worker_open_connections{{pool=\"a\",pid=\"{workerA}\"}}"));
        Assert.Contains("# TYPE dispatch_connections_accepted_total counter", metrics, StringComparison.Ordinal);
        Assert.Equal(404, (int)(await http.GetAsync(new Uri($"http://127.0.0.1:{metricsPort}/other"))).StatusCode);

        // Served by the unprivileged dispatcher: an open scrape connection is the dispatcher's socket, never the master's.
        using (var held = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            await held.ConnectAsync("127.0.0.1", metricsPort);
            var local = ((System.Net.IPEndPoint)held.LocalEndPoint!).Port;
            string? inode = null;
            Assert.True(Tools.Eventually(() => (inode = ServerSideInode(metricsPort, local)) is not null), "the scrape connection was not accepted");
            Assert.True(Tools.Eventually(() => Tools.Descriptors(d.DispatcherPid).ContainsValue($"socket:[{inode}]")), "the dispatcher does not hold the scrape connection");
            Assert.DoesNotContain($"socket:[{inode}]", Tools.Descriptors(d.MasterPid).Values);
        }

        // The control socket is root's: mode 0600, and another uid cannot even connect.
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(socket));
        var stranger = Tools.Run("setpriv", "--reuid", "10001", "--regid", "10001", "--clear-groups", Master, "status", "--socket", socket);
        Assert.Equal(1, stranger.ExitCode);
        Assert.Contains("Cannot reach the master", stranger.Stderr, StringComparison.Ordinal);

        // The JSON log file: one object per line, with the structured properties.
        var ready = File.ReadLines(jsonLog).Select(l => JsonNode.Parse(l)!).First(e => e["MessageTemplate"]!.GetValue<string>().StartsWith("Dispatch ready", StringComparison.Ordinal));
        Assert.Equal(d.MasterPid, ready["Properties"]!["MasterPid"]!.GetValue<int>());
        Assert.Equal(d.DispatcherPid, ready["Properties"]!["DispatcherPid"]!.GetValue<int>());
        // ... and a child's line keeps the child's properties: the dispatcher's non-TLS connection above.
        var notTls = File.ReadLines(jsonLog).Select(l => JsonNode.Parse(l)!).First(e => e["Properties"]?["Line"]?.GetValue<string>().EndsWith(": not TLS", StringComparison.Ordinal) == true);
        Assert.Equal("Dispatcher", notTls["Properties"]!["Role"]!.GetValue<string>());
        Assert.Equal(d.DispatcherPid, notTls["Properties"]!["Pid"]!.GetValue<int>());
        Assert.True(notTls["Properties"]!["ConnectionId"]!.GetValue<long>() > 0);
        Assert.StartsWith("127.0.0.1:", notTls["Properties"]!["Client"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    /// <summary>The inode of the accepted (server-side) socket of a loopback TCP connection, from /proc/net/tcp.</summary>
    private static string? ServerSideInode(int serverPort, int clientPort)
    {
        foreach (var line in File.ReadLines("/proc/net/tcp").Skip(1))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (int.Parse(f[1].Split(':')[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture) == serverPort
                && int.Parse(f[2].Split(':')[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture) == clientPort
                && f[3] == "01"
                && f[9] != "0") // 0 until accept(2) gives the queued connection a socket of its own
                return f[9];
        }

        return null;
    }

    [SkippableFact]
    public void Check_refuses_a_metrics_endpoint_off_loopback_and_a_bad_log_format()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("operations-check");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["metrics"] = new JsonObject { ["listen"] = "0.0.0.0:9187" };
        config["log"] = new JsonObject { ["format"] = "xml", ["file"] = "relative.log" };
        config["control"] = new JsonObject { ["socket"] = "run/control.sock" };
        var path = Path.Combine(dir, "bad.json");
        File.WriteAllText(path, config.ToJsonString());
        var check = Tools.Run(Master, "check", "--config", path);
        Assert.Equal(1, check.ExitCode);
        Assert.Contains("metrics:listen: 0.0.0.0:9187 is not a loopback address", check.Stderr, StringComparison.Ordinal);
        Assert.Contains("log:format: 'xml' is not a log format", check.Stderr, StringComparison.Ordinal);
        Assert.Contains("log:file: 'relative.log' is not an absolute path", check.Stderr, StringComparison.Ordinal);
        Assert.Contains("control:socket: 'run/control.sock' is not an absolute socket path", check.Stderr, StringComparison.Ordinal);
    }

    public void Dispose() => _dispatch?.Dispose();
}
