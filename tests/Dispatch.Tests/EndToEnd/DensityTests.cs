using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>Memory settings of idle workers: the GC configuration they run with, and the heap limit from the pool's cgroup.</summary>
public sealed class DensityTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public DensityTests(ITestOutputHelper output) => _output = output;

    private static Dictionary<string, string> Environ(int pid) =>
        File.ReadAllText($"/proc/{pid}/environ").Split('\0', StringSplitOptions.RemoveEmptyEntries)
            .Select(e => e.Split('=', 2)).ToDictionary(p => p[0], p => p.Length > 1 ? p[1] : string.Empty, StringComparer.Ordinal);

    [SkippableFact]
    public void A_pool_with_a_memory_limit_gives_its_workers_a_share_of_it_as_their_gc_heap_hard_limit()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("density");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["pools"]!["a"]!["cgroup"] = new JsonObject { ["memoryMax"] = "256M" };
        config["pools"]!["a"]!["maxWorkers"] = 2;
        // Debug: each worker logs the GC configuration it runs with (GC.GetConfigurationVariables).
        config["log"] = new JsonObject { ["level"] = "Debug" };
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);

        // 256 MiB for 2 workers: three quarters of 128 MiB each = 96 MiB, in hexadecimal as the runtime reads it.
        var limited = Environ(_dispatch.WorkerPid("a"));
        Assert.Equal("6000000", limited["DOTNET_GCHeapHardLimit"]);
        Assert.False(Environ(_dispatch.WorkerPid("b")).ContainsKey("DOTNET_GCHeapHardLimit"));

        // The shared array pool's arrays per size and core (Spawner.PooledArrays), through stage 1 into the jailed
        // worker, and in the dispatcher: what a surge leaves pooled (docs/floods.md).
        foreach (var pid in new[] { _dispatch.WorkerPid("a"), _dispatch.WorkerPid("b"), _dispatch.DispatcherPid })
            Assert.Equal("16", Environ(pid)["DOTNET_SYSTEM_BUFFERS_SHAREDARRAYPOOL_MAXARRAYSPERPARTITION"]);

        // Every worker: workstation, non-concurrent GC, conserving memory, as its GC reports them (a NativeAOT
        // worker has these compiled in: Worker.csproj); the limited one with its heap hard limit.
        foreach (var (pool, limit) in new[] { ("a", "100663296"), ("b", "0") })
        {
            var pid = _dispatch.WorkerPid(pool);
            var gc = GcConfiguration(_dispatch.WaitForLine(new Regex($@"Worker {pid} \({pool}\): GC configuration: (.*)$")).Groups[1].Value);
            Assert.Equal("False", gc["ServerGC"]);
            Assert.Equal("False", gc["ConcurrentGC"]);
            Assert.Equal("5", gc["GCConserveMem"]);
            Assert.Equal(limit, gc["GCHeapHardLimit"]);

            // The young generation the master gives its own children (Spawner.Gen0Budget): at most 4 MiB, not the 128
            // (32 with a heap limit) whose garbage an idle connection's share of memory carried (docs/operations.md).
            Assert.Equal("4194304", gc["GCGen0MaxBudget"]);

            // Its basic region (Spawner.RegionSize): 256 KiB, not 4 MiB, so that the pinned blocks of a connection
            // still open do not keep a 32 MiB region of the pinned object heap (docs/floods.md).
            Assert.Equal("262144", gc["GCRegionSize"]);

            // Its heap's range: 8 GiB without a heap hard limit (Spawner.RegionRange), five times the limit with one.
            Assert.Equal(pool == "a" ? "503316480" : "8589934592", gc["GCRegionRange"]);
        }
    }

    private static Dictionary<string, string> GcConfiguration(string line) =>
        line.Split(", ").Select(kv => kv.Split('=', 2)).ToDictionary(kv => kv[0], kv => kv.Length > 1 ? kv[1] : string.Empty, StringComparer.Ordinal);

    [SkippableFact]
    public void An_idle_worker_that_stopped_its_load_reports_reports_again_when_connections_arrive()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("density-load");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        // One worker taking one connection at a time: the dispatcher hands it the next one only after the worker
        // reported the previous one finished. A report lost after an idle spell leaves it "full": the request gets 503.
        config["pools"]!["a"]!["maxWorkers"] = 1;
        config["pools"]!["a"]!["maxConnectionsPerWorker"] = 1;
        config["dispatcher"]!["workerWait"] = "30s";
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        var url = $"http://127.0.0.1:{_dispatch.HttpPort}/";
        var first = Tools.Curl("-H", "Host: a.localhost", url);
        Assert.Equal((200, "A"), (first.Status, first.Body));
        _dispatch.WorkerPid("a");
        for (var i = 0; i < 3; i++)
        {
            // Idle for a while: nothing open, nothing new, so the worker's load timer has stopped (after two periods).
            Thread.Sleep(1000);
            var response = Tools.Curl("-H", "Host: a.localhost", url);
            Assert.Equal((200, "A"), (response.Status, response.Body));
        }

        Assert.Single(System.Text.RegularExpressions.Regex.Matches(_dispatch.Log, @"Worker \d+ for pool a ready"));
        Assert.DoesNotMatch(new System.Text.RegularExpressions.Regex(@"No worker of pool a could take"), _dispatch.Log);
    }

    public void Dispose() => _dispatch?.Dispose();
}
