using Dispatch.Master.Config;

namespace Dispatch.Master.Tests.Support;

/// <summary>A config of two tenants: vhost a (root /srv/a) served by pool a, vhost b (root /srv/b) by pool b.</summary>
internal static class TwoTenants
{
    public static DispatchConfig Build(Func<PoolConfig, PoolConfig>? poolA = null)
    {
        var (sample, _) = SampleConfigs.Build(Samples.Make<VhostConfig>(1), Samples.Make<PoolConfig>(1));
        var a = Pool("a", poolA);
        var b = Pool("b", null);
        return sample with
        {
            Pools = new Dictionary<string, PoolConfig> { ["a"] = a, ["b"] = b },
            Vhosts = new Dictionary<string, VhostConfig> { ["a.example"] = Vhost("a"), ["b.example"] = Vhost("b") },
        };
    }

    public static IReadOnlyList<VhostConfig> VhostsOf(DispatchConfig config, string pool) =>
        [.. config.Vhosts.Values.Where(v => v.ServedBy(pool))];

    private static PoolConfig Pool(string name, Func<PoolConfig, PoolConfig>? change)
    {
        var pool = Samples.Make<PoolConfig>(1) with { Name = name, Chroot = null, LandlockWrite = [$"/srv/{name}-uploads"] };
        return change is null ? pool : change(pool);
    }

    private static VhostConfig Vhost(string tenant) =>
        Samples.Make<VhostConfig>(1) with { Name = $"{tenant}.example", Identity = null, Pool = tenant, Root = $"/srv/{tenant}", PassthroughCertDir = null };
}
