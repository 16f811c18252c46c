using Dispatch.Master.Config;
using Dispatch.Wire;

namespace Dispatch.Master.Children;

/// <param name="Spec">What stage 1 builds the worker's jail from.</param>
/// <param name="Vhosts">The vhosts the pool serves.</param>
/// <param name="Probes">The paths the worker proves it cannot open (other tenants', keys, logs, the config...).</param>
/// <param name="Absent">In a chroot: the probes that must not exist at all in the worker's view.</param>
internal sealed record WorkerJail(JailSpec Spec, IReadOnlyList<VhostConfig> Vhosts, string[] Probes, string[] Absent);
