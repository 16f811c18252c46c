using System.Globalization;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// A worker's start (docs/coldstart.md): the warm-up self-request only where there is a JIT to warm, and, at
/// Debug level, every step of the start logged on one clock across the processes, in the order the start
/// takes them. Durations belong to bench/coldstart.sh; these tests check what happens, not how fast.
/// </summary>
public sealed partial class ColdStartTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public ColdStartTests(ITestOutputHelper output) => _output = output;

    /// <summary>The staged Worker is a JIT build when its IL (Worker.dll) ships beside it; NativeAOT has none.</summary>
    private static bool WorkerIsJit => File.Exists(Path.Combine(TestWorld.AppDirectory, "Worker.dll"));

    [SkippableFact]
    public void A_worker_warms_itself_up_with_a_request_only_when_it_runs_on_a_jit()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("coldstart-warm");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        _dispatch = DispatchInstance.StartReady(dir, DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b), _output);
        var response = Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/");
        Assert.Equal((200, "A"), (response.Status, response.Body));

        var ready = _dispatch.WaitForLine(new Regex(@"Worker \d+ for pool a ready .*")).Value;
        if (WorkerIsJit)
        {
            Assert.Matches(@"warmed by a self-request in \d+ ms \(HTTP/1\.1 200 OK\)", ready);
        }
        else
        {
            Assert.Contains("no warm-up (NativeAOT: no JIT to warm)", ready, StringComparison.Ordinal);
            Assert.DoesNotContain("warmed by a self-request", ready, StringComparison.Ordinal);
        }
    }

    [SkippableFact]
    public void At_debug_level_every_step_of_a_cold_start_is_logged_in_order_on_one_clock()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("coldstart-trace");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["log"] = new System.Text.Json.Nodes.JsonObject { ["level"] = "Debug" };
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        var pid = _dispatch.WorkerPid("a");
        _dispatch.WaitForLine(new Regex($@"Worker {pid} \(a\): Start-up ready at"));
        _dispatch.WaitForLine(new Regex(@"Start-up handed at [\d.]+ ms for pool a "));

        // The master's, stage 1's, the jailed image's and the dispatcher's steps, as the start takes them: each caused by
        // the one before it. The master's check of the proof runs beside the worker's server start (the worker does not
        // wait for it), so it is only ordered between the proof and the hand-over.
        string[] order = ["need-worker", "spawn", "stage1-main", "stage1-spec", "stage1-exec", "main", "hello", "setup", "proof", "server", "ready", "given-to-dispatcher", "handed"];
        var seen = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var line in _dispatch.Log.Split('\n'))
        {
            var step = StepLine().Match(line);
            var ours = line.Contains("for pool a", StringComparison.Ordinal) || line.Contains("(a)", StringComparison.Ordinal);
            if (step.Success && ours)
                seen.TryAdd(step.Groups[1].Value, double.Parse(step.Groups[2].Value, CultureInfo.InvariantCulture));
        }

        foreach (var step in order.Append("proof-checked"))
            Assert.True(seen.ContainsKey(step), $"no '{step}' step in the log; seen: {string.Join(", ", seen.Keys)}");
        Assert.True(seen["proof"] <= seen["proof-checked"] && seen["proof-checked"] <= seen["given-to-dispatcher"], $"proof at {seen["proof"]}, checked at {seen["proof-checked"]}, given at {seen["given-to-dispatcher"]}");
        for (var i = 1; i < order.Length; i++)
            Assert.True(seen[order[i - 1]] <= seen[order[i]], $"{order[i - 1]} at {seen[order[i - 1]]} ms came after {order[i]} at {seen[order[i]]} ms");
    }

    [GeneratedRegex(@"Start-up (\S+) at ([\d.]+) ms")]
    private static partial Regex StepLine();

    public void Dispose() => _dispatch?.Dispose();
}
