using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// A pool whose worker fails at start: the master backs off per pool (not one start per connection), connections get
/// 503 at once instead of waiting <c>workerWait</c>, <c>status</c> and the metrics show the backoff, and a reload that
/// fixes the pool clears it.
/// </summary>
public sealed class SpawnBackoffTests : IDisposable
{
    private const int Requests = 12;
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public SpawnBackoffTests(ITestOutputHelper output) => _output = output;

    private static string Master => Path.Combine(TestWorld.AppDirectory, "Master");

    [SkippableFact]
    public async Task A_pool_whose_worker_fails_at_start_backs_off_answers_503_at_once_and_a_fixing_reload_clears_it()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("spawn-backoff");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "tenant B" });
        var failing = Path.Combine(dir, "fails-at-start");
        File.WriteAllText(failing, "#!/bin/sh\necho 'this worker cannot start' >&2\nexit 1\n");
        File.SetUnixFileMode(failing, (UnixFileMode)0b111_101_101);
        var metricsPort = TestWorld.FreePort();
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["pools"]!["b"]!["program"] = failing;

        // Far longer than any client here waits: a 503 must come from the backoff, not from workerWait running out.
        config["dispatcher"]!["workerWait"] = "10m";
        config["metrics"] = new JsonObject { ["listen"] = $"127.0.0.1:{metricsPort}" };
        var d = _dispatch = DispatchInstance.StartReady(dir, config, _output);
        var url = $"http://127.0.0.1:{d.HttpPort}/";

        for (var i = 0; i < Requests; i++)
        {
            var r = Tools.Run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "60", "-H", "Host: b.localhost", url);
            Assert.True(r.ExitCode == 0, $"request {i}: curl exit {r.ExitCode}: {r.Stderr}");
            Assert.Equal("503", r.Stdout);
        }

        // Not one start per connection: the master waited between attempts.
        var failures = Regex.Count(d.Log, "Could not start a worker for pool b");
        _output.WriteLine($"{Requests} requests, {failures} failed starts");
        Assert.InRange(failures, 1, Requests - 1);
        d.WaitForLine(new Regex(@"Could not start a worker for pool b: .*next attempt in \d+ s"));

        // status --json and the metrics report it.
        var socket = Path.Combine(dir, "control.sock");
        using (var status = JsonDocument.Parse(Tools.Run(Master, "status", "--json", "--socket", socket).Stdout))
        {
            var pool = status.RootElement.GetProperty("pools").EnumerateArray().Single(p => p.GetProperty("name").GetString() == "b");
            Assert.Equal(JsonValueKind.Object, pool.GetProperty("backoff").ValueKind);
            Assert.True(pool.GetProperty("backoff").GetProperty("failures").GetInt32() >= 1);
            var poolA = status.RootElement.GetProperty("pools").EnumerateArray().Single(p => p.GetProperty("name").GetString() == "a");
            Assert.Equal(JsonValueKind.Null, poolA.GetProperty("backoff").ValueKind);
        }

        Assert.Contains("backing off:", Tools.Run(Master, "status", "--socket", socket).Stdout, StringComparison.Ordinal);
        using (var http = new HttpClient())
        {
            var metrics = await http.GetStringAsync(new Uri($"http://127.0.0.1:{metricsPort}/metrics"));
            var line = metrics.Split('\n').Single(l => l.StartsWith("dispatch_pool_start_failures{pool=\"b\"} ", StringComparison.Ordinal));
            Assert.True(double.Parse(line.Split(' ')[1], CultureInfo.InvariantCulture) >= 1, line);
            Assert.Contains("dispatch_pool_start_failures{pool=\"a\"} 0", metrics, StringComparison.Ordinal);
        }

        // Tenant a is unaffected.
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", url).Status);

        // A reload that fixes pool b clears its backoff: the next request is served.
        config["pools"]!["b"]!.AsObject().Remove("program");
        File.WriteAllText(d.ConfigPath, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        d.WaitForLine(new Regex(@"Pool b changed in the reload: its start backoff is cleared|Configuration reloaded"));
        d.WaitForLine(new Regex(@"Configuration reloaded"));
        var served = Tools.Curl("-H", "Host: b.localhost", url);
        Assert.Equal(200, served.Status);
        Assert.Contains("tenant B", served.Body, StringComparison.Ordinal);
        using (var status = JsonDocument.Parse(Tools.Run(Master, "status", "--json", "--socket", socket).Stdout))
        {
            var pool = status.RootElement.GetProperty("pools").EnumerateArray().Single(p => p.GetProperty("name").GetString() == "b");
            Assert.Equal(JsonValueKind.Null, pool.GetProperty("backoff").ValueKind);
        }
    }

    public void Dispose() => _dispatch?.Dispose();
}
