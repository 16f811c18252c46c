using Dispatch.Master.Config;
using Dispatch.Platform.Confinement;
using Serilog;

namespace Dispatch.Master.Children;

/// <summary>
/// A kernel whose Landlock has no network rules (ABI &lt; 4) cannot hold TCP to the listed ports: said once per
/// start and reload, per pool that lists any, rather than silently running unrestricted.
/// </summary>
internal static class LandlockAbiWarning
{
    public static void Log(DispatchConfig config, ILogger log) => Log(config, log, Landlock.AbiVersion());

    public static void Log(DispatchConfig config, ILogger log, int abi)
    {
        if (abi >= Landlock.NetworkAbi)
            return;
        foreach (var pool in config.Pools.Values)
        {
            var ports = LandlockRules.ConnectPorts(pool, config.Vhosts.Values.Where(v => v.ServedBy(pool.Name)));
            if (ports.Count > 0 && Landlock.NetworkWarning(abi, ports) is { } warning)
                log.Warning("Pool {Pool}: {Warning}", pool.Name, warning);
        }

        log.Warning("Landlock ABI {Abi}: no process's TCP bind or connect is restricted by Landlock on this kernel (needs ABI {Needed})", abi, Landlock.NetworkAbi);
    }
}
