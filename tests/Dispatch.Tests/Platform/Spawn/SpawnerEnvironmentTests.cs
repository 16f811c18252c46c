using Dispatch.Platform.Spawn;

namespace Dispatch.Tests.Platform.Spawn;

/// <summary>The environment the master gives a child: Dispatch's own get the small gen0 budget and array pool, a foreign program does not.</summary>
public sealed class SpawnerEnvironmentTests
{
    [Fact]
    public void Dispatchs_own_children_get_a_gen0_budget_of_at_most_4_MiB()
    {
        foreach (var environment in new[] { Spawner.CleanEnvironment(heapHardLimit: null), Spawner.CleanEnvironment(heapHardLimit: 96UL << 20) })
        {
            var variables = environment.Select(e => e.Split('=', 2)).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);

            // Hexadecimal bytes, as the runtime reads them (DensityTests: the worker's GC reports it).
            Assert.Equal(4L << 20, Convert.ToInt64(variables["DOTNET_GCGen0MaxBudget"], 16));
        }
    }

    [Fact]
    public void Dispatchs_own_children_keep_16_arrays_per_size_and_core_in_the_shared_array_pool()
    {
        foreach (var environment in new[] { Spawner.CleanEnvironment(heapHardLimit: null), Spawner.CleanEnvironment(heapHardLimit: 96UL << 20) })
        {
            var variables = environment.Select(e => e.Split('=', 2)).ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);
            Assert.Equal("16", variables["DOTNET_SYSTEM_BUFFERS_SHAREDARRAYPOOL_MAXARRAYSPERPARTITION"]);
        }
    }

    [Fact]
    public void A_foreign_program_keeps_the_runtime_defaults()
    {
        Assert.DoesNotContain(Spawner.CleanEnvironment(), e => e.StartsWith("DOTNET_GCGen0", StringComparison.Ordinal));
        Assert.DoesNotContain(Spawner.CleanEnvironment(), e => e.StartsWith("DOTNET_SYSTEM_BUFFERS_", StringComparison.Ordinal));
    }
}
