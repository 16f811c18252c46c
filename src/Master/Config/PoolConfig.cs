using Dispatch.Wire.Payloads;

namespace Dispatch.Master.Config;

/// <param name="Cgroup">The pool's cgroup limits (memory.max, cpu.max, pids.max of one group for all its workers); null: no group.</param>
/// <param name="LandlockRead">Extra paths the pool's workers may read (beyond the runtime and their roots).</param>
/// <param name="LandlockExec">Paths the pool's workers may execute from (CGI interpreters); null: /usr/bin and /bin when a vhost has CGI.</param>
/// <param name="LandlockWrite">Directories the pool's workers may write beneath (uploads, caches): owned by the pool's uid (see <see cref="LandlockRules"/>).</param>
/// <param name="ConnectTcp">TCP ports the pool's workers may connect to, beyond their proxy upstreams' ports.</param>
internal sealed record PoolConfig(
    string Name,
    uint Uid,
    uint Gid,
    ValueList<uint> Groups,
    int MaxWorkers,
    ValueList<string> LandlockRead,
    ValueList<string>? LandlockExec,
    int MinSpare,
    TimeSpan IdleTimeout,
    bool OneShot,
    int MaxConnectionsPerWorker,
    ValueList<Dispatch.Wire.ResourceLimit> Limits,
    ValueList<Dispatch.Wire.ModuleSpec> Modules,
    string? Program,
    Dispatch.Platform.Cgroups.CgroupLimits? Cgroup,
    ValueList<string> LandlockWrite,
    ValueList<ushort> ConnectTcp,
    ChrootConfig? Chroot = null,
    bool Landlock = true,
    bool TlsHandOff = false)
{
    /// <summary>The pool's <c>timeouts</c>: its workers' send, keep-alive and header timeouts and minimum data rates.</summary>
    public Dispatch.Wire.Payloads.WorkerTimeouts Timeouts { get; init; } = Dispatch.Wire.Payloads.WorkerTimeouts.Default;
}
