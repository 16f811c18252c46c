using Dispatch.Master.Files;
using Dispatch.Wire.Identity;
using Dispatch.Wire.Payloads;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>An identity vhost's settings (<c>"identity": "authenticated"</c>).</summary>
internal static class IdentitySection
{
    /// <summary>
    /// <c>"identity": "authenticated"</c>: the credentials file (read by <see cref="TemplatePools.Read"/>), the logins'
    /// pools (<c>"users"</c>: login → pool, or <c>"userTemplate"</c>), the realm and the limits on failed logins.
    /// TLS terminated by BouncyCastle (the dispatcher reads the first request and hands the session over), plain HTTP
    /// redirected only, no access or error log of its own (a log file belongs to one pool), pools of Dispatch's own
    /// worker (it verifies every request again), one login per pool.
    /// </summary>
    public static IdentityConfig? Read(
        ConfigContext ctx,
        IConfigurationSection v,
        string name,
        IReadOnlyDictionary<string, PoolConfig> pools,
        Dictionary<string, IReadOnlyList<(string Login, string? Hash)>?> credentials,
        string tls,
        string engine,
        string http,
        string? docRoot)
    {
        var path = v.Path;
        if (v["identity"] != "authenticated")
        {
            ctx.Error($"{path}:identity", $"'{v["identity"]}' is not an identity mode (authenticated)");
            return null;
        }

        if (v["pool"] is not null)
            ctx.Error($"{path}:pool", "an identity vhost has no pool of its own: its logins' pools serve it (\"users\" or \"userTemplate\")");
        if (tls != TlsModes.Terminate)
            ctx.Error($"{path}:tls", "an identity vhost needs \"tls\": \"terminate\" (the dispatcher reads the credentials of the first request)");
        if (engine != TlsEngines.BouncyCastle)
            ctx.Error($"{path}:engine", "an identity vhost needs the bouncycastle engine (the session is handed to the login's worker after the first request)");
        if (http != HttpModes.Redirect)
            ctx.Error($"{path}:http", "an identity vhost refuses plain HTTP: only \"redirect\" is allowed");
        foreach (var key in new[] { "accessLog", "accessLogFormat", "errorLog" })
        {
            if (v[key] is not null)
                ctx.Error($"{path}:{key}", "an identity vhost is served by one pool per login, and a log file belongs to one pool: log in the pools' own vhosts or the master's log");
        }

        if (v["credentials"] is null)
        {
            ctx.Error($"{path}:credentials", "required (an htpasswd file: login:bcrypt or SHA-crypt hash)");
            return null;
        }

        var realm = v["realm"] ?? name;
        if (realm.Length is 0 or > 128 || realm.Any(c => c < 0x20 || c > 0x7e || c is '"' or '\\'))
            ctx.Error($"{path}:realm", "1-128 printable ASCII characters without '\"' or '\\'");
        var limits = v.GetSection("loginLimits");
        ctx.Unknown(limits, limits.Path, ["perAddress", "perLogin", "window"]);
        var perAddress = ctx.Int(limits.GetSection("perAddress"), 10, 1, 1_000_000);
        var perLogin = ctx.Int(limits.GetSection("perLogin"), 20, 1, 1_000_000);
        var window = ctx.Duration(limits.GetSection("window"), TimeSpan.FromMinutes(1));
        if (!credentials.TryGetValue(v.Key, out var entries) || entries is null)
            return null;
        var hashes = entries.Where(e => e.Hash is not null).ToDictionary(e => e.Login, e => e.Hash!, StringComparer.Ordinal);
        var users = new List<IdentityLogin>();
        var table = v.GetSection("users");
        var template = v.GetSection("userTemplate");
        if (table.Exists() == template.Exists())
        {
            ctx.Error(path, "an identity vhost needs exactly one of \"users\" (login → pool) and \"userTemplate\"");
            return null;
        }

        if (table.Exists())
        {
            foreach (var u in table.GetChildren())
            {
                if (!BasicCredentials.IsValidLogin(u.Key))
                    ctx.Error(u.Path, $"'{u.Key}' is not a login");
                else if (u.Value is null || !pools.ContainsKey(u.Value))
                    ctx.Error(u.Path, $"no pool named '{u.Value}'");
                else if (entries.All(e => e.Login != u.Key))
                    ctx.Error(u.Path, $"login '{u.Key}' is not in {v["credentials"]}");
                else if (hashes.TryGetValue(u.Key, out var hash))
                    users.Add(new IdentityLogin(u.Key, hash, u.Value));
            }
        }
        else
        {
            var pattern = template["pool"] ?? "{login}";
            foreach (var (login, hash) in hashes)
            {
                var pool = pattern.Replace("{login}", login, StringComparison.Ordinal);
                if (pools.ContainsKey(pool))
                    users.Add(new IdentityLogin(login, hash, pool));
            }
        }

        foreach (var twice in users.GroupBy(u => u.Pool).Where(g => g.Count() > 1))
            ctx.Error($"{path}:users", $"pool '{twice.Key}' serves logins {string.Join(", ", twice.Select(u => u.Login))}: one login per pool (a worker runs as its login's own uid)");
        foreach (var u in users)
        {
            var pc = pools[u.Pool];
            if (pc.Program is not null)
                ctx.Error($"{path}:users", $"pool '{u.Pool}' runs a program of its own: an identity vhost needs Dispatch's worker, which verifies every request again");
            if (docRoot is not null && Directory.Exists(docRoot) && PathSafety.CheckTraversable(System.IO.Path.GetDirectoryName(docRoot.TrimEnd('/')) ?? "/", pc.Uid, [pc.Gid, .. pc.Groups]) is { } why)
                ctx.Error($"{path}:root", $"pool '{u.Pool}' cannot reach its document root: {why}");
        }

        return new IdentityConfig(System.IO.Path.GetFullPath(v["credentials"]!), realm, users, perAddress, perLogin, window);
    }
}
