using System.Text.Json;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// What a receiver checks in a parsed <see cref="RouteSnapshot"/> or <see cref="PoolSettings"/> before it uses any of
/// it (<see cref="SnapshotJson"/>), beyond what the JSON reader refuses itself (nulls, missing or repeated members):
/// host names that are none (<see cref="HostNames.IsValidPattern"/>, the config loader's own test: the routers would
/// otherwise hold a key no request can match, or match one they should not), names that must be unique (host names
/// across vhosts, pools, logins, error statuses), a default vhost that is none of the snapshot's, enumerated words that are none of
/// their type's (a TLS mode, a plain-HTTP mode, a TLS engine, a compression level), and numbers outside the range their
/// type documents (a negative timeout, a request head larger than a <see cref="Connection"/> can carry, a port outside
/// 1..65535, an error page's status outside 400-599, a redirect's status other than 301, 302, 303, 307 or 308). The
/// master never sends such a payload (its config loader refuses what would make one); a payload that has one is the peer
/// breaking the protocol, refused here with the member's JSON path, not found later as an exception far from the
/// boundary. Checks of meaning (a header name, a redirect target, an error page's path) stay with
/// their users (<see cref="VhostWebRules"/>).
/// </summary>
internal static class PayloadChecks
{
    /// <summary>The most characters of a refused string a refusal quotes (a host name is at most 253).</summary>
    private const int MaxShown = 256;

    /// <exception cref="JsonException">The first problem, its message starting with the JSON path of the member.</exception>
    public static void Check(RouteSnapshot snapshot)
    {
        var s = snapshot.Settings;
        NotNegative(s.HeaderTimeoutMs, "$.settings.headerTimeoutMs");
        InRange(s.MaxRequestHead, 1, Connection.MaxInitial, "$.settings.maxRequestHead");
        NotNegative(s.WorkerWaitMs, "$.settings.workerWaitMs");
        NotNegative(s.HandshakeTimeoutMs, "$.settings.handshakeTimeoutMs");
        NotNegative(s.SendTimeoutMs, "$.settings.sendTimeoutMs");
        NotNegative(s.Limits.PerAddressConnections, "$.settings.limits.perAddressConnections");
        NotNegative(s.Limits.PerAddressPerSecond, "$.settings.limits.perAddressPerSecond");
        NotNegative(s.Limits.GlobalConnections, "$.settings.limits.globalConnections");
        NotNegative(s.Limits.GlobalPerSecond, "$.settings.limits.globalPerSecond");
        InRange(snapshot.HttpsPort, 1, 65535, "$.httpsPort");

        var names = new HostNameOwners();
        for (var i = 0; i < snapshot.Vhosts.Count; i++)
        {
            var v = snapshot.Vhosts[i];
            var path = $"$.vhosts[{i}]";
            names.Add(v.Name, $"{path}.name");
            for (var a = 0; a < v.Aliases.Count; a++)
                names.Add(v.Aliases[a], $"{path}.aliases[{a}]");
            OneOf(v.TlsMode, TlsModes.All, $"{path}.tlsMode", "a TLS mode");
            OneOf(v.HttpMode, HttpModes.All, $"{path}.httpMode", "a plain-HTTP mode");
            OneOf(v.Engine, TlsEngines.All, $"{path}.engine", "a TLS engine");
            if (v.Identity is { } identity)
            {
                InRange(identity.FailuresPerAddress, 1, int.MaxValue, $"{path}.identity.failuresPerAddress");
                InRange(identity.FailuresPerLogin, 1, int.MaxValue, $"{path}.identity.failuresPerLogin");
                NotNegative(identity.FailureWindowMs, $"{path}.identity.failureWindowMs");
                Unique(identity.Users, u => u.Login, StringComparer.Ordinal, $"{path}.identity.users", "login");
            }
        }

        // The dispatcher takes the vhost whose name is this one, spelt the same (the master sends both normalised): a
        // name of none would leave it without a default, routing as if there were none.
        if (snapshot.DefaultVhost is { } defaultVhost && !snapshot.Vhosts.Any(v => string.Equals(v.Name, defaultVhost, StringComparison.Ordinal)))
            throw Refused("$.defaultVhost", $"'{Shown(defaultVhost)}' is not the name of a vhost of the snapshot");

        Unique(snapshot.Pools, p => p.Name, StringComparer.Ordinal, "$.pools", "name");
        for (var i = 0; i < snapshot.Pools.Count; i++)
        {
            var p = snapshot.Pools[i];
            NotNegative(p.MaxConnectionsPerWorker, $"$.pools[{i}].maxConnectionsPerWorker");
            NotNegative(p.MinSpare, $"$.pools[{i}].minSpare");
            NotNegative(p.IdleTimeoutMs, $"$.pools[{i}].idleTimeoutMs");
        }
    }

    /// <exception cref="JsonException">The first problem, its message starting with the JSON path of the member.</exception>
    public static void Check(PoolSettings pool)
    {
        if (pool.Timeouts is { } t)
        {
            NotNegative(t.MinRequestBodyRate, "$.timeouts.minRequestBodyRate");
            NotNegative(t.MinResponseRate, "$.timeouts.minResponseRate");
        }

        var names = new HostNameOwners();
        for (var i = 0; i < pool.Vhosts.Count; i++)
        {
            var v = pool.Vhosts[i];
            var path = $"$.vhosts[{i}]";
            names.Add(v.Name, $"{path}.name");
            for (var a = 0; a < v.Aliases.Count; a++)
                names.Add(v.Aliases[a], $"{path}.aliases[{a}]");
            if (v.AccessLogFormat is { } format)
                OneOf(format, WorkerVhost.AccessLogFormats, $"{path}.accessLogFormat", "an access log format");
            if (v.FastCgi?.Spawn is { } spawn)
                InRange(spawn.MaxChildren, 1, int.MaxValue, $"{path}.fastCgi.spawn.maxChildren");
            if (v.Web is { } web)
            {
                InRange(web.MaxBodySize, 1, VhostWebRules.MaxMaxBodySize, $"{path}.web.maxBodySize");
                if (web.Compression is { } c)
                {
                    InRange(c.MinSize, 0, VhostWebRules.MaxCompressMinSize, $"{path}.web.compression.minSize");
                    OneOf(c.Level, VhostWebRules.CompressionLevels, $"{path}.web.compression.level", "a compression level");
                }

                for (var e = 0; e < web.ErrorPages.Count; e++)
                {
                    if (!VhostWebRules.IsErrorStatus(web.ErrorPages[e].Status))
                        throw Refused($"{path}.web.errorPages[{e}].status", $"{web.ErrorPages[e].Status} is not an error status ({VhostWebRules.MinErrorStatus}-{VhostWebRules.MaxErrorStatus})");
                }

                Unique(web.ErrorPages, p => p.Status, EqualityComparer<int>.Default, $"{path}.web.errorPages", "status");
                for (var r = 0; r < web.Redirects.Count; r++)
                {
                    if (!VhostWebRules.RedirectStatuses.Contains(web.Redirects[r].Status))
                        throw Refused($"{path}.web.redirects[{r}].status", $"{web.Redirects[r].Status} is not a redirect status ({Words(VhostWebRules.RedirectStatuses)})");
                }
            }
        }
    }

    private static void NotNegative(long value, string path) => InRange(value, 0, long.MaxValue, path);

    private static void InRange(long value, long min, long max, string path)
    {
        if (value < min || value > max)
            throw Refused(path, max is long.MaxValue or int.MaxValue ? (min == 0 ? $"{value} is negative" : $"{value} is below {min}") : $"{value} is outside {min}..{max}");
    }

    /// <summary>An enumerated word (a mode, an engine, a level): exactly one of <paramref name="words"/>, case and all.</summary>
    private static void OneOf(string value, IReadOnlyList<string> words, string path, string what)
    {
        if (!words.Contains(value, StringComparer.Ordinal))
            throw Refused(path, $"'{value}' is not {what} ({Words(words)})");
    }

    /// <summary>"a, b or c".</summary>
    private static string Words<T>(IReadOnlyList<T> words) =>
        words.Count < 2 ? string.Join(string.Empty, words) : $"{string.Join(", ", words.Take(words.Count - 1))} or {words[^1]}";

    private static void Unique<T, TKey>(ValueList<T> items, Func<T, TKey> key, IEqualityComparer<TKey> comparer, string path, string member)
        where TKey : notnull
    {
        var seen = new Dictionary<TKey, int>(comparer);
        for (var i = 0; i < items.Count; i++)
        {
            if (!seen.TryAdd(key(items[i]), i))
                throw Refused($"{path}[{i}].{member}", $"'{key(items[i])}' is also {path}[{seen[key(items[i])]}].{member}");
        }
    }

    /// <summary>A peer's string as a refusal quotes it: at most <see cref="MaxShown"/> characters of it.</summary>
    private static string Shown(string value) =>
        value.Length <= MaxShown ? value : $"{value[..MaxShown]}… ({value.Length} characters)";

    /// <summary>The refusal; <see cref="SnapshotJson"/> puts the payload's name and the path in front of the reason.</summary>
    private static JsonException Refused(string path, string why) => new(why, path, null, null);

    /// <summary>Host names as the routers match them (<see cref="HostNames.Normalize"/>): each may belong to one place only.</summary>
    private sealed class HostNameOwners
    {
        private readonly Dictionary<string, string> _owners = new(StringComparer.Ordinal);

        public void Add(string name, string path)
        {
            if (!HostNames.IsValidPattern(name))
                throw Refused(path, $"'{Shown(name)}' is not a valid host name or '*.' wildcard ({HostNames.PatternRule})");
            var normalized = HostNames.Normalize(name);
            if (!_owners.TryAdd(normalized, path))
                throw Refused(path, $"the host name '{normalized}' is also {_owners[normalized]}");
        }
    }
}
