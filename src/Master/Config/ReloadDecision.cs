namespace Dispatch.Master.Config;

/// <summary>
/// What a reload does with a freshly loaded config, decided from the running one and the new one alone (no process is
/// touched): rejected (errors, or changes that need a restart), or accepted, retiring the workers of the pools it
/// changes or removes. Also the words the reload answers with.
/// </summary>
internal static class ReloadDecision
{
    public const string NeedsRestart = "changes to listen, dispatcher, control or metrics need a restart";

    /// <summary>Why <paramref name="fresh"/> cannot replace <paramref name="running"/> without a restart, or null when it can.</summary>
    public static string? Rejection(DispatchConfig running, DispatchConfig fresh) =>
        ConfigDiff.NeedsRestart(running, fresh) ? NeedsRestart : null;

    /// <summary>The pools whose workers finish and leave when <paramref name="fresh"/> replaces <paramref name="running"/>.</summary>
    public static string[] Retired(DispatchConfig running, DispatchConfig fresh) => ConfigDiff.RetiredPools(running, fresh);

    /// <summary>A config that did not load: its first five errors, and how many more.</summary>
    public static string Invalid(string why, IReadOnlyList<ConfigError> errors) =>
        $"rejected ({why}): {string.Join("; ", errors.Take(5))}{(errors.Count > 5 ? $"; and {errors.Count - 5} more" : string.Empty)}";

    /// <summary>An accepted reload, as status and the control socket tell it.</summary>
    public static string Summary(long version, string why, DispatchConfig fresh, string[] retired) =>
        $"version {version} ({why}): {fresh.Vhosts.Count} vhosts in {fresh.Pools.Count} pools; workers retired for {RetiredText(retired)}";

    public static string RetiredText(string[] retired) => retired.Length == 0 ? "no pool" : string.Join(", ", retired);
}
