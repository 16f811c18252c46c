using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>On-demand workers, spares, idle reaping, one-shot pools, limits and crashes.</summary>
public sealed class PoolTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public PoolTests(ITestOutputHelper output) => _output = output;

    private DispatchInstance Start(string name, Action<JsonObject> adjust)
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory(name);
        var rootA = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "pool A", ["big.bin"] = new string('x', 4 << 20) });
        var rootB = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "pool B" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), rootA, rootB);
        adjust(config);
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        return _dispatch;
    }

    private static int Pid(Match m) => int.Parse(m.Groups["pid"].Value, System.Globalization.CultureInfo.InvariantCulture);

    [SkippableFact]
    public void A_pool_without_spares_starts_a_worker_on_demand_that_leaves_when_idle_and_spares_are_kept_warm()
    {
        var d = Start("on-demand", c =>
        {
            c["pools"]!["a"]!["idleTimeout"] = "1s";
            c["pools"]!["b"]!["minSpare"] = 1;
        });
        var url = $"http://127.0.0.1:{d.HttpPort}/";

        // b's spare is started (jailed, warmed) before any client asks.
        var spare = Pid(d.WaitForLine(new Regex(@"Worker (?<pid>\d+) for pool b ready .* as a spare; ")));
        Assert.DoesNotContain("for pool a ready", d.Log, StringComparison.Ordinal);

        var cold = Stopwatch.StartNew();
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", url).Status);
        var coldMs = cold.Elapsed.TotalMilliseconds;
        var worker = d.WorkerPid("a");
        Assert.Equal("10001\t10001\t10001\t10001", Tools.Status($"/proc/{worker}/status")["Uid"]);

        var warm = Stopwatch.StartNew();
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", url).Status);
        var spareMs = warm.Elapsed.TotalMilliseconds;
        Assert.Equal(spare, d.WorkerPid("b"));
        _output.WriteLine($"first request, cold pool: {coldMs:F0} ms; first request, pool with a spare: {spareMs:F0} ms (curl wall time, informational)");

        // Idle for its idleTimeout: let go, exits cleanly, and its process is gone.
        d.WaitForLine(new Regex($@"Worker {worker} of pool a exited \(exit code 0\)"));
        Assert.True(Tools.Eventually(() => !Directory.Exists($"/proc/{worker}")));
        // The spare stays (minSpare), and a new request for a starts a new worker.
        Assert.True(Directory.Exists($"/proc/{spare}"));
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", url).Status);
        Assert.NotEqual(worker, d.WorkerPid("a", skip: 1));
    }

    [SkippableFact]
    public void A_one_shot_pool_serves_each_connection_with_a_fresh_worker()
    {
        var d = Start("one-shot", c =>
        {
            c["pools"]!["a"]!["oneShot"] = true;
            c["pools"]!["a"]!["minSpare"] = 1;
            c["jailProbe"]!["threads"] = 4;
        });
        var url = $"http://127.0.0.1:{d.HttpPort}/";
        for (var i = 0; i < 50; i++)
            Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", url).Status);

        // Each worker's access line travels through its stderr to the master's log: wait for the last one.
        List<int> Served() => [.. Regex.Matches(d.Log, @"Worker (?<pid>\d+) \(a\): a\.localhost 127\.0\.0\.1 ""GET /"" 200").Select(Pid)];
        Assert.True(Tools.Eventually(() => Served().Count >= 50), $"{Served().Count} access lines");
        var served = Served();
        Assert.Equal(50, served.Count);
        Assert.Equal(50, served.Distinct().Count());
        foreach (var pid in served)
        {
            d.WaitForLine(new Regex($@"Worker {pid} of pool a exited \(exit code 0\)"));
            Assert.True(Tools.Eventually(() => !Directory.Exists($"/proc/{pid}")), $"worker {pid} still exists");
        }
    }

    [SkippableFact]
    public async Task MaxWorkers_and_maxConnectionsPerWorker_hold_under_500_concurrent_connections()
    {
        var d = Start("limits", c =>
        {
            c["pools"]!["a"]!["maxWorkers"] = 2;
            c["pools"]!["a"]!["minSpare"] = 2; // both workers exist before the burst: the outcome does not depend on start-up speed
            c["pools"]!["a"]!["maxConnectionsPerWorker"] = 10;
            c["dispatcher"]!["workerWait"] = "3s";
            c["dispatcher"]!["headerTimeout"] = "30s";
            c["jailProbe"]!["threads"] = 4;
        });
        d.WorkerPid("a", skip: 1);
        var clients = new List<TcpClient>();
        try
        {
            var request = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
            async Task<string> OpenAndAsk()
            {
                var c = new TcpClient();
                lock (clients)
                    clients.Add(c);
                await c.ConnectAsync(IPAddress.Loopback, d.HttpPort);
                await c.GetStream().WriteAsync(request);
                var buffer = new byte[4096];
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
                var n = await c.GetStream().ReadAsync(buffer, cts.Token);
                return Encoding.ASCII.GetString(buffer, 0, n);
            }

            var answers = await Task.WhenAll(Enumerable.Range(0, 500).Select(_ => OpenAndAsk()));
            var ok = answers.Count(a => a.StartsWith("HTTP/1.1 200", StringComparison.Ordinal));
            var busy = answers.Count(a => a.StartsWith("HTTP/1.1 503", StringComparison.Ordinal));
            _output.WriteLine($"200: {ok}, 503: {busy}");
            foreach (var odd in answers.Where(a => !a.StartsWith("HTTP/1.1 200", StringComparison.Ordinal) && !a.StartsWith("HTTP/1.1 503", StringComparison.Ordinal)).Take(5))
                _output.WriteLine($"other answer: '{odd}'");
            Assert.Equal(500, ok + busy);
            Assert.Equal(20, ok); // 2 workers × 10 connections, all kept alive by their clients
            var workers = Regex.Matches(d.Log, @"Worker (?<pid>\d+) for pool a ready").Select(Pid).Distinct().ToList();
            Assert.Equal(2, workers.Count);
            foreach (var w in workers)
            {
                var tcp = Tools.TcpConnectionCount(w);
                _output.WriteLine($"worker {w}: {tcp} client TCP connections");
                Assert.InRange(tcp, 1, 10);
            }

            Assert.Contains("pool 'a' already has its maximum of 2 workers", d.Log, StringComparison.Ordinal);
        }
        finally
        {
            foreach (var c in clients)
                c.Dispose();
        }
    }

    [SkippableFact]
    public async Task The_machine_wide_worker_limit_holds_across_pools()
    {
        // Pool a's one worker is a spare, started with the master: its request must not depend on how fast a worker
        // starts (seconds on a loaded machine, and workerWait is short so that b's refusal is quick).
        var metricsPort = TestWorld.FreePort();
        var d = Start("global-limit", c =>
        {
            c["limits"] = new JsonObject { ["maxWorkers"] = 1 };
            c["dispatcher"]!["workerWait"] = "1s";
            c["pools"]!["a"]!["minSpare"] = 1;
            c["metrics"] = new JsonObject { ["listen"] = $"127.0.0.1:{metricsPort}" };
        });
        d.WaitForLine(new Regex(@"Worker \d+ of pool a joined as a spare"));
        var url = $"http://127.0.0.1:{d.HttpPort}/";
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", url).Status);
        var refused = Tools.Curl("-H", "Host: b.localhost", url);
        Assert.Equal(503, refused.Status);
        Assert.Contains("No worker is available for 'b.localhost'", refused.Body, StringComparison.Ordinal);
        d.WaitForLine(new Regex(@"Refused a worker for pool b: the machine already runs its maximum of 1 workers \(limits:maxWorkers\)"));
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", url).Status); // a keeps its worker

        // Refused again and again while the limit lasts (each request asks after the dispatcher's 1 s pause), and
        // counted each time, but said once a minute in each process's log, not once a second.
        using var http = new HttpClient();
        double refusals;
        var tries = 0;
        do
        {
            Assert.Equal(503, Tools.Curl("-H", "Host: b.localhost", url).Status);
            var metrics = await http.GetStringAsync(new Uri($"http://127.0.0.1:{metricsPort}/metrics"));
            var line = metrics.Split('\n').Single(l => l.StartsWith("dispatch_worker_refusals_total{pool=\"b\"} ", StringComparison.Ordinal));
            refusals = double.Parse(line.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        }
        while (refusals < 3 && ++tries < 20);
        Assert.True(refusals >= 3, $"{refusals} refusals counted");
        Assert.Equal(1, Regex.Count(d.Log, "Refused a worker for pool b:"));
        Assert.Equal(1, Regex.Count(d.Log, "No new worker for pool b:"));
    }

    [SkippableFact]
    public async Task Killing_a_worker_mid_request_resets_that_client_and_the_next_request_succeeds()
    {
        var d = Start("crash", _ => { });
        using var client = new TcpClient();
        client.ReceiveBufferSize = 4096;
        await client.ConnectAsync(IPAddress.Loopback, d.HttpPort);
        var stream = client.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes("GET /big.bin HTTP/1.1\r\nHost: a.localhost\r\n\r\n"));
        var buffer = new byte[1024];
        var first = await stream.ReadAsync(buffer);
        Assert.StartsWith("HTTP/1.1 200", Encoding.ASCII.GetString(buffer, 0, first), StringComparison.Ordinal);
        var worker = d.WorkerPid("a");

        Assert.Equal(0, Tools.Run("kill", "-KILL", worker.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
        var total = first;
        var ended = false;
        try
        {
            int n;
            while ((n = await stream.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(30))) > 0)
                total += n;
            ended = true;
        }
        catch (IOException)
        {
            ended = true; // reset
        }

        Assert.True(ended);
        Assert.True(total < 4 << 20, "the whole file arrived although its worker was killed");
        d.WaitForLine(new Regex($@"Worker {worker} of pool a exited \(signal 9\)"));
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
        Assert.NotEqual(worker, d.WorkerPid("a", skip: 1));
    }

    // A one-shot worker finishes its connection after the dispatcher has let it go. It used to exit at the master's
    // next message, whatever it was: a log reopen (SIGUSR1, logrotate's nightly step) cut a download in progress.
    // The same exit path serves a worker let go because its dispatcher is gone (an upgrade, a stop).
    [SkippableFact]
    public async Task A_one_shot_worker_finishes_a_slow_download_across_a_log_reopen()
    {
        string? accessLog = null;
        var d = Start("one-shot-reopen", c =>
        {
            c["pools"]!["a"]!["oneShot"] = true;
            accessLog = Path.Combine(Path.GetDirectoryName(c["vhosts"]!["a.localhost"]!["root"]!.GetValue<string>())!, "a.access.log");
            c["vhosts"]!["a.localhost"]!["accessLog"] = accessLog;
        });
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 8192 };
        await client.ConnectAsync(IPAddress.Loopback, d.HttpPort);
        await client.SendAsync(Encoding.ASCII.GetBytes("GET /big.bin HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n"));
        var worker = d.WorkerPid("a");

        // Read slowly; after the first bytes, while most of the file is still to be written, the master reopens the logs
        // and tells every worker.
        var received = new MemoryStream();
        var buffer = new byte[4096];
        var reopened = false;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        int n;
        while ((n = await client.ReceiveAsync(buffer, SocketFlags.None, cts.Token)) > 0)
        {
            received.Write(buffer, 0, n);
            if (!reopened)
            {
                reopened = true;
                Assert.Equal(0, Tools.Run("kill", "-USR1", d.MasterPid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
                d.WaitForLine(new Regex("Access and error logs reopened"));
            }

            await Task.Delay(1, cts.Token);
        }

        Assert.True(reopened, $"only {received.Length} bytes arrived");
        var text = Encoding.ASCII.GetString(received.GetBuffer(), 0, (int)Math.Min(received.Length, 512));
        Assert.StartsWith("HTTP/1.1 200", text, StringComparison.Ordinal);
        var headEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        Assert.True(headEnd > 0, text);
        Assert.Equal(4L << 20, received.Length - headEnd - 4);
        d.WaitForLine(new Regex($@"Worker {worker} of pool a exited \(exit code 0\)"));
        Assert.True(Tools.Eventually(() => File.Exists(accessLog) && File.ReadAllText(accessLog!).Contains("/big.bin", StringComparison.Ordinal)), "the download's access line");
    }

    public void Dispose() => _dispatch?.Dispose();
}
