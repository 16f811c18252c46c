namespace Dispatch.TlsDispatcher.Identity;

/// <summary>
/// Failed logins of one identity vhost, counted per client address and per login in fixed windows: once either
/// count reaches its limit within the window, further attempts from that address or for that login are refused
/// (429) until the window ends, without a hash being computed. Only failures count (a wrong password, an unknown
/// login); a success does not reset them. Memory is bounded: at most <see cref="MaxEntries"/> keys, expired ones
/// dropped first, and when all are live the oldest window goes.
/// </summary>
internal sealed class LoginThrottle
{
    public const int MaxEntries = 65536;

    private static readonly Dictionary<string, LoginThrottle> ByVhost = new(StringComparer.Ordinal);

    private readonly Lock _sync = new();
    private readonly Dictionary<string, (int Count, long WindowStart)> _failures = new(StringComparer.Ordinal);

    /// <summary>Keys (addresses and logins) counted now.</summary>
    public int Entries
    {
        get
        {
            lock (_sync)
                return _failures.Count;
        }
    }

    /// <summary>The throttle of <paramref name="vhost"/>, kept across route-table reloads.</summary>
    public static LoginThrottle For(string vhost)
    {
        lock (ByVhost)
        {
            if (!ByVhost.TryGetValue(vhost, out var throttle))
                ByVhost[vhost] = throttle = new LoginThrottle();
            return throttle;
        }
    }

    /// <summary>Null when an attempt may proceed; otherwise which limit holds it ("address" or "login") and the seconds until its window ends.</summary>
    public (string Which, int RetryAfter)? Blocked(string address, string login, int perAddress, int perLogin, int windowMs, long now)
    {
        lock (_sync)
        {
            if (Over("a:" + address, perAddress, windowMs, now) is { } a)
                return ("address", a);
            if (Over("l:" + login, perLogin, windowMs, now) is { } l)
                return ("login", l);
            return null;
        }
    }

    /// <summary>Counts one failed login from <paramref name="address"/> for <paramref name="login"/>.</summary>
    public void Failed(string address, string login, int windowMs, long now)
    {
        lock (_sync)
        {
            if (_failures.Count >= MaxEntries - 2)
                Prune(windowMs, now);
            Count("a:" + address, windowMs, now);
            Count("l:" + login, windowMs, now);
        }
    }

    private int? Over(string key, int limit, int windowMs, long now)
    {
        if (!_failures.TryGetValue(key, out var entry) || now - entry.WindowStart >= windowMs || entry.Count < limit)
            return null;
        return (int)Math.Max(1, (windowMs - (now - entry.WindowStart) + 999) / 1000);
    }

    private void Count(string key, int windowMs, long now)
    {
        var entry = _failures.GetValueOrDefault(key);
        _failures[key] = now - entry.WindowStart >= windowMs || entry.Count == 0 ? (1, now) : (entry.Count + 1, entry.WindowStart);
    }

    private void Prune(int windowMs, long now)
    {
        foreach (var key in _failures.Where(kv => now - kv.Value.WindowStart >= windowMs).Select(kv => kv.Key).ToList())
            _failures.Remove(key);
        if (_failures.Count < MaxEntries - 2)
            return;
        foreach (var key in _failures.OrderBy(kv => kv.Value.WindowStart).Take(_failures.Count / 4).Select(kv => kv.Key).ToList())
            _failures.Remove(key);
    }
}
