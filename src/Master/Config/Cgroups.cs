using Dispatch.Platform.Cgroups;

namespace Dispatch.Master.Config;

/// <summary>What of a config's cgroup limits this machine cannot apply.</summary>
internal static class Cgroups
{
    private static readonly (CgroupController Controller, string Key)[] Keys =
        [(CgroupController.Memory, "memoryMax"), (CgroupController.Cpu, "cpuMax"), (CgroupController.Pids, "pidsMax")];

    /// <summary>(JSON path, reason) for every limit asked for whose controller the machine does not offer.</summary>
    public static IEnumerable<(string Path, string Reason)> Unavailable(IEnumerable<PoolConfig> pools, CgroupHost host) =>
        from p in pools
        where p.Cgroup is not null
        from c in p.Cgroup!.Requested
        where host.For(c) is null
        select ($"pools:{p.Name}:cgroup:{Keys.First(k => k.Controller == c).Key}", host.WhyUnavailable(c));
}
