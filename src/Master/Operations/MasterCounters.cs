using System.Collections.Concurrent;

namespace Dispatch.Master.Operations;

/// <summary>
/// The master's own counters (worker spawns and exits, refusals, reloads, restarts, upgrades), keyed by
/// their Prometheus name and labels. Bumped on events, which are rare next to connections.
/// </summary>
internal sealed class MasterCounters
{
    private readonly ConcurrentDictionary<string, long> _values = new(StringComparer.Ordinal);

    public void Add(string key, long n = 1) => _values.AddOrUpdate(key, n, (_, v) => v + n);

    public void WorkerSpawned(string pool, bool ok) => Add($"dispatch_worker_spawns_total{{pool=\"{Prometheus.Escape(pool)}\",result=\"{(ok ? "ok" : "failed")}\"}}");

    public void WorkerExited(string pool, bool clean) => Add($"dispatch_worker_exits_total{{pool=\"{Prometheus.Escape(pool)}\",how=\"{(clean ? "clean" : "abnormal")}\"}}");

    public void WorkerRefused(string pool) => Add($"dispatch_worker_refusals_total{{pool=\"{Prometheus.Escape(pool)}\"}}");

    public void Reload(string result) => Add($"dispatch_reloads_total{{result=\"{result}\"}}");

    public IReadOnlyList<KeyValuePair<string, long>> Snapshot() => [.. _values.OrderBy(kv => kv.Key, StringComparer.Ordinal)];
}
