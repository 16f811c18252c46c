namespace Dispatch.Master.Children;

/// <summary>
/// Per pool, consecutive failed worker starts and how long the master waits before the next attempt: 1 s after the
/// first failure, doubling up to 60 s; a worker that starts clears it, and so does a reload that changes the pool.
/// Meanwhile the dispatcher is told at once (WorkerRefused with the delay), so its waiting clients get 503 promptly.
/// </summary>
internal sealed class SpawnBackoff
{
    public static readonly TimeSpan First = TimeSpan.FromSeconds(1);
    public static readonly TimeSpan Longest = TimeSpan.FromSeconds(60);
    private readonly Lock _gate = new();
    private readonly Dictionary<string, State> _pools = new(StringComparer.Ordinal);

    /// <param name="Failures">Consecutive failed starts.</param>
    /// <param name="UntilMs">Environment.TickCount64 before which no start is attempted.</param>
    /// <param name="LastError">Why the last start failed.</param>
    public sealed record State(int Failures, long UntilMs, string LastError)
    {
        public TimeSpan Remaining => TimeSpan.FromMilliseconds(Math.Max(0, UntilMs - Environment.TickCount64));
    }

    /// <summary>How long <paramref name="pool"/> still waits before its next start; null when a start may be tried now.</summary>
    public TimeSpan? Remaining(string pool)
    {
        lock (_gate)
            return _pools.TryGetValue(pool, out var s) && s.Remaining > TimeSpan.Zero ? s.Remaining : null;
    }

    /// <summary>Records a failed start; returns how long the pool now waits.</summary>
    public TimeSpan Failed(string pool, string error)
    {
        lock (_gate)
        {
            var failures = (_pools.TryGetValue(pool, out var s) ? s.Failures : 0) + 1;
            var delay = Delay(failures);
            _pools[pool] = new State(failures, Environment.TickCount64 + (long)delay.TotalMilliseconds, error);
            return delay;
        }
    }

    /// <summary>The wait after <paramref name="failures"/> consecutive failures: 1, 2, 4 ... 60 s.</summary>
    public static TimeSpan Delay(int failures) =>
        failures <= 0 ? TimeSpan.Zero : TimeSpan.FromMilliseconds(Math.Min(First.TotalMilliseconds * Math.Pow(2, Math.Min(failures - 1, 16)), Longest.TotalMilliseconds));

    public void Succeeded(string pool)
    {
        lock (_gate)
            _pools.Remove(pool);
    }

    /// <summary>Forgets the given pools' failures (a reload changed them: the next start is tried at once).</summary>
    public List<string> Clear(IEnumerable<string> pools)
    {
        lock (_gate)
            return [.. pools.Where(_pools.Remove)];
    }

    public Dictionary<string, State> Snapshot()
    {
        lock (_gate)
            return new Dictionary<string, State>(_pools, StringComparer.Ordinal);
    }
}
