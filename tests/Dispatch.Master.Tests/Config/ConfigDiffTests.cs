using Dispatch.Master.Config;
using Dispatch.Master.Tests.Support;

namespace Dispatch.Master.Tests.Config;

/// <summary>What a reload sees as changed: by record equality, for every field (generated, not listed).</summary>
public class ConfigDiffTests
{
    [Fact]
    public void Equal_configs_change_nothing()
    {
        var (a, _) = SampleConfigs.Build(Samples.Make<VhostConfig>(1), Samples.Make<PoolConfig>(1));
        var (b, _) = SampleConfigs.Build(Samples.Make<VhostConfig>(1), Samples.Make<PoolConfig>(1));

        Assert.False(ConfigDiff.NeedsRestart(a, b));
        Assert.Empty(ConfigDiff.RetiredPools(a, b));
        Assert.Equal((0, 0, 0), ConfigDiff.Vhosts(a, b));
    }

    [Fact]
    public void A_change_to_any_single_field_of_a_vhost_counts_it_as_changed()
    {
        var (a, pool) = SampleConfigs.Build(Samples.Make<VhostConfig>(1), Samples.Make<PoolConfig>(1));
        var fields = Samples.Fields(typeof(VhostConfig)).Where(f => f != nameof(VhostConfig.Name)).ToList();
        Assert.NotEmpty(fields);
        foreach (var field in fields)
        {
            var (b, _) = SampleConfigs.Build((VhostConfig)Samples.Vary(typeof(VhostConfig), field), a.Pools[pool]);
            Assert.True(ConfigDiff.Vhosts(a, b) == (0, 0, 1), $"{field}: not counted as a changed vhost");
        }
    }

    [Fact]
    public void Turning_reload_on_change_on_or_off_needs_no_restart()
    {
        var (a, _) = SampleConfigs.Build(Samples.Make<VhostConfig>(1), Samples.Make<PoolConfig>(1));
        var b = a with { Operations = a.Operations with { ReloadOnChange = !a.Operations.ReloadOnChange } };

        Assert.False(ConfigDiff.NeedsRestart(a, b));
        Assert.True(ConfigDiff.NeedsRestart(a, b with { Operations = b.Operations with { ControlSocket = "/run/other.sock" } }));
    }

    [Theory]
    [InlineData(nameof(DispatchConfig.Listen))]
    [InlineData(nameof(DispatchConfig.Dispatcher))]
    [InlineData(nameof(DispatchConfig.Operations))]
    public void Listeners_the_dispatcher_and_operations_need_a_restart(string part)
    {
        var (a, _) = SampleConfigs.Build(Samples.Make<VhostConfig>(1), Samples.Make<PoolConfig>(1));
        var b = part switch
        {
            nameof(DispatchConfig.Listen) => a with { Listen = [Samples.Make<ListenConfig>(2)] },
            nameof(DispatchConfig.Dispatcher) => a with { Dispatcher = Samples.Make<DispatcherConfig>(2) },
            _ => a with { Operations = Samples.Make<OperationsConfig>(2) },
        };

        Assert.True(ConfigDiff.NeedsRestart(a, b));
        Assert.False(ConfigDiff.NeedsRestart(a, a with { Log = Samples.Make<LogConfig>(2) }));
    }
}
