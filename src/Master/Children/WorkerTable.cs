using Dispatch.Master.Config;

namespace Dispatch.Master.Children;

/// <summary>
/// The workers the master knows: those running (each with the dispatcher it was given to) and, per pool, how many are
/// starting. The pool's and the machine's worker limits are checked here, against both, in one step with the
/// reservation of the start.
/// </summary>
internal sealed class WorkerTable
{
    private readonly Lock _gate = new();
    private readonly Dictionary<int, ChildProcess> _workers = [];
    private readonly Dictionary<int, ChildProcess> _ownerOf = [];
    private readonly Dictionary<string, int> _starting = [];

    /// <summary>
    /// Reserves the start of a worker of <paramref name="pool"/>, or says why not (with how long the pool backs off,
    /// when that is why): the pool's <c>maxWorkers</c>, the machine's <c>limits.maxWorkers</c>, the pool's backoff.
    /// A reservation ends with <see cref="Register"/> or <see cref="CancelStart"/>.
    /// </summary>
    public (string? Refusal, TimeSpan RetryAfter) Reserve(PoolConfig pool, int machineMaxWorkers, SpawnBackoff backoff)
    {
        lock (_gate)
        {
            var live = _workers.Values.Count(w => w.Name == pool.Name) + _starting.GetValueOrDefault(pool.Name);
            var total = _workers.Count + _starting.Values.Sum();
            string? refusal = live >= pool.MaxWorkers ? $"pool '{pool.Name}' already has its maximum of {pool.MaxWorkers} workers"
                : total >= machineMaxWorkers ? $"the machine already runs its maximum of {machineMaxWorkers} workers (limits:maxWorkers)"
                : null;
            if (refusal is not null)
                return (refusal, default);
            if (backoff.Remaining(pool.Name) is { } wait)
            {
                // Its workers fail to start: no new attempt before the backoff ends, and the dispatcher answers 503 now.
                return ($"pool '{pool.Name}' is backing off after failed worker starts; next attempt in {wait.TotalSeconds:F1} s", wait);
            }

            _starting[pool.Name] = _starting.GetValueOrDefault(pool.Name) + 1;
            return (null, default);
        }
    }

    /// <summary>A reserved start that failed.</summary>
    public void CancelStart(string pool)
    {
        lock (_gate)
            _starting[pool]--;
    }

    /// <summary>A reserved start whose worker is ready, given to <paramref name="dispatcher"/>.</summary>
    public void Register(ChildProcess worker, ChildProcess dispatcher)
    {
        lock (_gate)
        {
            _workers[worker.Pid] = worker;
            _ownerOf[worker.Pid] = dispatcher;
            _starting[worker.Name]--;
        }
    }

    /// <summary>Forgets a worker; false if it was not known. <paramref name="owner"/>: the dispatcher it was given to.</summary>
    public bool Remove(int pid, out ChildProcess? owner)
    {
        lock (_gate)
        {
            _ownerOf.Remove(pid, out owner);
            return _workers.Remove(pid);
        }
    }

    /// <summary>How many workers <paramref name="pool"/> lacks for its <c>minSpare</c> at <paramref name="dispatcher"/> (starting ones count).</summary>
    public int MissingSpares(PoolConfig pool, ChildProcess dispatcher)
    {
        lock (_gate)
            return pool.MinSpare - _workers.Values.Count(w => w.Name == pool.Name && _ownerOf.GetValueOrDefault(w.Pid) == dispatcher) - _starting.GetValueOrDefault(pool.Name);
    }

    /// <summary>The worker <paramref name="pid"/> if it was given to <paramref name="dispatcher"/>, else null.</summary>
    public ChildProcess? Find(int pid, ChildProcess dispatcher)
    {
        lock (_gate)
            return _workers.TryGetValue(pid, out var w) && _ownerOf.GetValueOrDefault(w.Pid) == dispatcher ? w : null;
    }

    public List<ChildProcess> OwnedBy(ChildProcess dispatcher)
    {
        lock (_gate)
            return [.. _workers.Values.Where(w => _ownerOf.GetValueOrDefault(w.Pid) == dispatcher)];
    }

    public List<ChildProcess> All()
    {
        lock (_gate)
            return [.. _workers.Values];
    }

    /// <summary>The running workers by pool then pid, with the dispatcher each was given to.</summary>
    public (List<ChildProcess> Workers, Dictionary<int, ChildProcess> Owners) Snapshot()
    {
        lock (_gate)
            return ([.. _workers.Values.OrderBy(w => w.Name, StringComparer.Ordinal).ThenBy(w => w.Pid)], new Dictionary<int, ChildProcess>(_ownerOf));
    }
}
