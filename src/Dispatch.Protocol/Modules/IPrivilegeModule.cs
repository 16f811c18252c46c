using System.Text.Json;

namespace Dispatch.Protocol.Modules;

/// <summary>
/// A privilege module: the public seam for third-party code that changes a pool's workers'
/// permissions (an SELinux or AppArmor context, a umask, a namespace...). It provides exactly two
/// things, as the Dispatching MPM proposal asked:
/// <list type="bullet">
/// <item><see cref="Validate"/>: read its part of a pool's configuration and reject it with clear
/// reasons — called by the master when it loads the config (and by <c>Master check</c>);</item>
/// <item><see cref="Apply"/>: change the current process — called in the worker's stage 1, as root,
/// on the main thread, after resource limits and before the capability bounding set is cleared and
/// groups, gid and uid are dropped (see <c>Jail</c> for the whole order).</item>
/// </list>
/// A module is a public, non-abstract class with a public parameterless constructor in an assembly
/// named in the config's <c>modules</c> section. The master loads it only if every component of its
/// path is owned by root and writable by no one else, and loads it from the descriptor it checked.
/// </summary>
public interface IPrivilegeModule
{
    /// <summary>Problems with <paramref name="settings"/> for <paramref name="pool"/>; empty when they are fine.</summary>
    IReadOnlyList<string> Validate(string pool, JsonElement settings);

    /// <summary>Applies <paramref name="settings"/> to the current process. Throw to stop the worker from starting.</summary>
    void Apply(string pool, JsonElement settings);
}
