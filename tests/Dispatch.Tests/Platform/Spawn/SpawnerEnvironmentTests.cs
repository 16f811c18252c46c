using Dispatch.Platform.Spawn;

namespace Dispatch.Tests.Platform.Spawn;

/// <summary>The environment the master gives a child: Dispatch's own get the small gen0 budget, GC regions and array pool, a foreign program does not.</summary>
public sealed class SpawnerEnvironmentTests
{
    [Fact]
    public void Dispatchs_own_children_get_a_gen0_budget_of_at_most_4_MiB()
    {
        foreach (var environment in new[] { Spawner.CleanEnvironment(heapHardLimit: null), Spawner.CleanEnvironment(heapHardLimit: 96UL << 20) })
        {
            var variables = Variables(environment);

            // Hexadecimal bytes, as the runtime reads them (DensityTests: the worker's GC reports it).
            Assert.Equal(4L << 20, Convert.ToInt64(variables["DOTNET_GCGen0MaxBudget"], 16));
        }
    }

    [Fact]
    public void Dispatchs_own_children_keep_16_arrays_per_size_and_core_in_the_shared_array_pool()
    {
        foreach (var environment in new[] { Spawner.CleanEnvironment(heapHardLimit: null), Spawner.CleanEnvironment(heapHardLimit: 96UL << 20) })
        {
            var variables = Variables(environment);
            Assert.Equal("16", variables["DOTNET_SYSTEM_BUFFERS_SHAREDARRAYPOOL_MAXARRAYSPERPARTITION"]);
        }
    }

    [Fact]
    public void Dispatchs_own_children_get_GC_regions_of_256_KiB()
    {
        foreach (var environment in new[] { Spawner.CleanEnvironment(heapHardLimit: null), Spawner.CleanEnvironment(heapHardLimit: 96UL << 20) })
        {
            var variables = Variables(environment);

            // Hexadecimal bytes, without 0x: a NativeAOT runtime ignored "0x40000" (DensityTests: the worker's GC reports it).
            Assert.Equal(256L << 10, Convert.ToInt64(variables["DOTNET_GCRegionSize"], 16));
            Assert.DoesNotContain("0x", variables["DOTNET_GCRegionSize"], StringComparison.OrdinalIgnoreCase);
        }
    }

    [Fact]
    public void Dispatchs_own_children_without_a_heap_hard_limit_get_a_GC_range_of_8_GiB_and_with_one_the_runtimes()
    {
        Assert.Equal(8L << 30, Convert.ToInt64(Variables(Spawner.CleanEnvironment(heapHardLimit: null))["DOTNET_GCRegionRange"], 16));

        // A range under the limit would cap the heap below it: the runtime reserves five times the limit itself.
        Assert.False(Variables(Spawner.CleanEnvironment(heapHardLimit: 96UL << 20)).ContainsKey("DOTNET_GCRegionRange"));
    }

    [Fact]
    public void A_foreign_program_keeps_the_runtime_defaults()
    {
        Assert.DoesNotContain(Spawner.CleanEnvironment(), e => e.StartsWith("DOTNET_GC", StringComparison.Ordinal));
        Assert.DoesNotContain(Spawner.CleanEnvironment(), e => e.StartsWith("DOTNET_SYSTEM_BUFFERS_", StringComparison.Ordinal));
    }

    private static Dictionary<string, string> Variables(string[] environment) =>
        environment.Select(e => e.Split('=', 2)).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
}
