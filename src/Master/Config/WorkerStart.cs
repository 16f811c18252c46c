using Dispatch.Wire.Payloads;

namespace Dispatch.Master.Config;

/// <summary>
/// What a pool's workers are started with (<see cref="Projections.WorkerStart"/>): their settings, their jail (the pool
/// without what changes in place), their vhosts' log files and their cgroup root. Compared by value on reload.
/// </summary>
internal sealed record WorkerStart(PoolSettings Settings, PoolConfig Jail, ValueList<VhostLogs> Logs, string? CgroupRoot);
