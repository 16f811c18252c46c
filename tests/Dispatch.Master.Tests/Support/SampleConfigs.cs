using Dispatch.Master.Config;

namespace Dispatch.Master.Tests.Support;

internal static class SampleConfigs
{
    /// <summary>A config of one vhost served by one pool: the vhost's identity login's pool, so that its worker gets the login.</summary>
    public static (DispatchConfig Config, string Pool) Build(VhostConfig vhost, PoolConfig pool)
    {
        var poolName = Samples.Make<VhostConfig>(1).Identity!.Users[0].Pool;
        pool = pool with { Name = poolName };
        var config = new DispatchConfig(
            "/etc/dispatch/dispatch.json",
            [Samples.Make<ListenConfig>(1)],
            Samples.Make<DispatcherConfig>(1),
            new Dictionary<string, PoolConfig> { [poolName] = pool },
            new Dictionary<string, VhostConfig> { [vhost.Name] = vhost },
            null,
            Samples.Make<SecurityConfig>(1),
            Samples.Make<LimitsConfig>(1),
            Samples.Make<LogConfig>(1),
            Samples.Make<JailProbeConfig>(1),
            Samples.Make<CgroupConfig>(1),
            Samples.Make<OperationsConfig>(1));
        return (config, poolName);
    }
}
