using Dispatch.Master.Config;
using Dispatch.Master.Tests.Support;

namespace Dispatch.Master.Tests.Config;

/// <summary>What a reload does with a new config, and what it answers, decided without touching a process.</summary>
public class ReloadDecisionTests
{
    [Fact]
    public void A_config_that_does_not_load_is_rejected_with_its_first_five_errors_and_how_many_more()
    {
        var errors = Enumerable.Range(1, 7).Select(i => new ConfigError("/etc/dispatch/dispatch.json", $"vhosts:v{i}:root", "no such directory")).ToList();

        var detail = ReloadDecision.Invalid("SIGHUP", errors);

        Assert.StartsWith("rejected (SIGHUP): /etc/dispatch/dispatch.json: vhosts:v1:root: no such directory; ", detail, StringComparison.Ordinal);
        Assert.Contains("vhosts:v5:root", detail, StringComparison.Ordinal);
        Assert.DoesNotContain("vhosts:v6:root", detail, StringComparison.Ordinal);
        Assert.EndsWith("; and 2 more", detail, StringComparison.Ordinal);
        Assert.DoesNotContain("more", ReloadDecision.Invalid("SIGHUP", errors.Take(5).ToList()), StringComparison.Ordinal);
    }

    [Fact]
    public void Listeners_need_a_restart_and_the_log_level_does_not()
    {
        var running = TwoTenants.Build();

        Assert.Equal(ReloadDecision.NeedsRestart, ReloadDecision.Rejection(running, running with { Listen = [Samples.Make<ListenConfig>(2)] }));
        Assert.Null(ReloadDecision.Rejection(running, running with { Log = Samples.Make<LogConfig>(2) }));
        Assert.Null(ReloadDecision.Rejection(running, running));
    }

    [Fact]
    public void A_changed_pool_is_retired_and_an_unchanged_one_keeps_its_workers()
    {
        var running = TwoTenants.Build();
        var fresh = running with { Pools = new Dictionary<string, PoolConfig>(running.Pools) { ["b"] = running.Pools["b"] with { Uid = 4242 } } };

        var retired = ReloadDecision.Retired(running, fresh);

        Assert.Equal(["b"], retired);
        Assert.Empty(ReloadDecision.Retired(running, running));
        Assert.Equal("version 7 (SIGHUP): 2 vhosts in 2 pools; workers retired for b", ReloadDecision.Summary(7, "SIGHUP", fresh, retired));
        Assert.Equal("version 8 (file changed): 2 vhosts in 2 pools; workers retired for no pool", ReloadDecision.Summary(8, "file changed", fresh, []));
    }
}
