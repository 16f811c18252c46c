namespace Dispatch.Master.Config;

/// <summary>What a reload changes, by record equality of the config and its projections (<see cref="Projections"/>).</summary>
internal static class ConfigDiff
{
    /// <summary>Listeners, the dispatcher's identity and settings, the control socket and metrics need a restart (not <c>reload.onChange</c>: it is read when a file changes).</summary>
    public static bool NeedsRestart(DispatchConfig old, DispatchConfig fresh) =>
        !fresh.Listen.SequenceEqual(old.Listen) || fresh.Dispatcher != old.Dispatcher
        || fresh.Operations with { ReloadOnChange = true } != old.Operations with { ReloadOnChange = true };

    /// <summary>The pools of <paramref name="old"/> whose workers were started with something else than <paramref name="fresh"/> gives (or that are gone).</summary>
    public static string[] RetiredPools(DispatchConfig old, DispatchConfig fresh) =>
        [.. old.Pools.Keys.Where(p => Projections.WorkerStart(old, p) != Projections.WorkerStart(fresh, p))];

    /// <summary>How many vhosts a reload adds, removes and changes (any field: anything a client or its worker would notice).</summary>
    public static (int Added, int Removed, int Changed) Vhosts(DispatchConfig old, DispatchConfig fresh)
    {
        var added = fresh.Vhosts.Keys.Count(k => !old.Vhosts.ContainsKey(k));
        var removed = old.Vhosts.Keys.Count(k => !fresh.Vhosts.ContainsKey(k));
        var changed = fresh.Vhosts.Count(kv => old.Vhosts.TryGetValue(kv.Key, out var o) && o != kv.Value);
        return (added, removed, changed);
    }
}
