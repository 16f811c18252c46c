using System.Text.Json.Nodes;
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
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);

        // 256 MiB for 2 workers: three quarters of 128 MiB each = 96 MiB, in hexadecimal as the runtime reads it.
        var limited = Environ(_dispatch.WorkerPid("a"));
        Assert.Equal("6000000", limited["DOTNET_GCHeapHardLimit"]);
        Assert.False(Environ(_dispatch.WorkerPid("b")).ContainsKey("DOTNET_GCHeapHardLimit"));

        // Every worker: workstation, non-concurrent GC, conserving memory (from the shipped runtimeconfig).
        var runtimeConfig = JsonNode.Parse(File.ReadAllText(Path.Combine(TestWorld.AppDirectory, "Worker.runtimeconfig.json")))!["runtimeOptions"]!["configProperties"]!;
        Assert.False(runtimeConfig["System.GC.Server"]!.GetValue<bool>());
        Assert.False(runtimeConfig["System.GC.Concurrent"]!.GetValue<bool>());
        Assert.Equal(5, runtimeConfig["System.GC.ConserveMemory"]!.GetValue<int>());
    }

    public void Dispose() => _dispatch?.Dispose();
}
