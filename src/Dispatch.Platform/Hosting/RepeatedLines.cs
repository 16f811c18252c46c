namespace Dispatch.Platform.Hosting;

/// <summary>
/// Lines that say the same thing again and again while a state lasts (a pool at its maximum of workers, refused a new
/// one every second while its workers are busy): the first is written, then the same line (same key) at most once per
/// interval, with the count of those not written since. php-fpm writes "server reached pm.max_children" the same way,
/// once as it happens and not per refused request. A key seen no more for an interval is forgotten, so that the table
/// holds only the states that last.
/// </summary>
public sealed class RepeatedLines
{
    /// <summary>The interval unless given: a minute.</summary>
    public static readonly TimeSpan DefaultEvery = TimeSpan.FromMinutes(1);

    /// <summary>Keys past which the forgotten ones are dropped when a new one comes.</summary>
    private const int PruneAt = 256;

    private readonly Dictionary<string, (long LoggedAt, long NotLogged)> _keys = new(StringComparer.Ordinal);
    private readonly long _everyMs;
    private readonly Func<long> _clockMs;
    private readonly Lock _gate = new();

    /// <param name="every">How often the same line may be written (<see cref="DefaultEvery"/>).</param>
    /// <param name="clockMs">Milliseconds, monotonic (<see cref="Environment.TickCount64"/> unless given: tests).</param>
    public RepeatedLines(TimeSpan? every = null, Func<long>? clockMs = null)
    {
        _everyMs = (long)(every ?? DefaultEvery).TotalMilliseconds;
        ArgumentOutOfRangeException.ThrowIfNegative(_everyMs);
        _clockMs = clockMs ?? (static () => Environment.TickCount64);
    }

    /// <summary>The keys remembered now (tests).</summary>
    public int Count
    {
        get
        {
            lock (_gate)
                return _keys.Count;
        }
    }

    /// <summary>
    /// Whether the line of <paramref name="key"/> may be written now. <see langword="true"/> the first time and once
    /// the interval has passed since it was last written, with <paramref name="notLogged"/> the times it was held back
    /// since; <see langword="false"/> otherwise (counted).
    /// </summary>
    public bool Allow(string key, out long notLogged)
    {
        var now = _clockMs();
        lock (_gate)
        {
            if (_keys.TryGetValue(key, out var seen) && now - seen.LoggedAt < _everyMs)
            {
                _keys[key] = seen with { NotLogged = seen.NotLogged + 1 };
                notLogged = 0;
                return false;
            }

            if (_keys.Count >= PruneAt)
                Prune(now);
            _keys[key] = (now, 0);
            notLogged = seen.NotLogged;
            return true;
        }
    }

    /// <summary>
    /// Writes a warning of <paramref name="messageTemplate"/> if the line of <paramref name="key"/> may be written now
    /// (<see cref="Allow"/>), saying how many times it was held back since the last one when it was.
    /// </summary>
    public void Warning(Serilog.ILogger log, string key, string messageTemplate, params object?[] values)
    {
        if (!Allow(key, out var notLogged))
            return;
        if (notLogged == 0)
            log.Warning(messageTemplate, values);
        else
            log.Warning(messageTemplate + " (also {NotLogged} times since the last such line)", [.. values, notLogged]);
    }

    private void Prune(long now)
    {
        foreach (var (key, seen) in _keys)
        {
            if (now - seen.LoggedAt >= _everyMs)
                _keys.Remove(key);
        }
    }
}
