using System.Net;
using Dispatch.Master.Certificates;
using Dispatch.Master.Files;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>
/// The checks that need more than one section: run once every pool and vhost is read (<see cref="ConfigLoader.Load"/>).
/// Each adds its errors to the context, as the sections do, so that <c>check</c>, <c>run</c> and a reload refuse
/// exactly the same configs.
/// </summary>
internal static class CrossChecks
{
    /// <summary>
    /// A log file is opened by root, chowned to root:pool and handed to the pool's workers: never a file root
    /// depends on, and one file shared by two pools would mix tenants (the same file by name, or by device and
    /// inode when it exists: another path to the same directory).
    /// </summary>
    public static void LogFiles(ConfigContext ctx, string full, IncludeDirectory.Summary? included, LogConfig log, IReadOnlyDictionary<string, VhostConfig> vhosts)
    {
        var reserved = new List<(string Path, string What)> { (full, "the config file") };
        if (included is not null && Directory.Exists(included.Directory))
            reserved.AddRange(Directory.EnumerateFiles(included.Directory).Select(f => (f, "an included config file")));
        if (log.File is { } masterLog)
            reserved.Add((masterLog, "the master's log:file"));
        foreach (var c in vhosts.Values.SelectMany(v => v.Certificates).Where(c => Directory.Exists(c.Directory)))
            reserved.AddRange(Directory.EnumerateFiles(c.Directory).Select(f => (f, $"a file of certificate directory {c.Directory}")));
        var logOwners = new Dictionary<string, VhostConfig>(StringComparer.Ordinal);
        var logIdentities = new Dictionary<(ulong, ulong), VhostConfig>();
        foreach (var v in vhosts.Values)
        {
            foreach (var (key, logPath) in new[] { ("accessLog", v.AccessLog), ("errorLog", v.ErrorLog) })
            {
                if (logPath is null || !System.IO.Path.IsPathRooted(logPath))
                    continue;
                if (TenantLogs.CheckNotReserved(logPath, reserved) is { } why)
                {
                    ctx.Error($"vhosts:{v.Name}:{key}", why);
                    continue;
                }

                var normalized = System.IO.Path.GetFullPath(logPath);
                var identity = TenantLogs.Identity(normalized);
                var other = logOwners.GetValueOrDefault(normalized) ?? (identity is { } id ? logIdentities.GetValueOrDefault(id) : null);
                if (other is not null && other.Pool != v.Pool)
                {
                    ctx.Error($"vhosts:{v.Name}:{key}", $"{logPath} is also a log of vhost {other.Name} of pool {other.Pool}: a log file belongs to one pool");
                    continue;
                }

                logOwners.TryAdd(normalized, v);
                if (identity is { } known)
                    logIdentities.TryAdd(known, v);
            }
        }
    }

    /// <summary>
    /// Landlock write paths (and a chroot's writable paths): now that every pool's vhosts are known. Each on its own
    /// first, then against the other pools' acceptable ones.
    /// </summary>
    public static void LandlockWrites(
        ConfigContext ctx, string full, IReadOnlyDictionary<string, PoolConfig> pools, IEnumerable<(IConfigurationSection Section, string Name, string Path)> poolSections, IReadOnlyDictionary<string, VhostConfig> vhosts)
    {
        var acceptedWrites = new Dictionary<string, List<(string Path, string JsonPath)>>(StringComparer.Ordinal);
        foreach (var (p, poolName, _) in poolSections.Where(p => pools.ContainsKey(p.Name)))
        {
            var pool = pools[poolName];
            acceptedWrites[pool.Name] = [];
            foreach (var w in p.GetSection("landlock:write").GetChildren().Where(w => w.Value is not null && System.IO.Path.IsPathRooted(w.Value)))
            {
                var writePath = w.Value!.TrimEnd('/') is { Length: > 0 } t ? t : "/";
                if (LandlockRules.CheckWritePath(writePath, pool, vhosts.Values, full) is { } why)
                    ctx.Error(w.Path, why);
                else
                    acceptedWrites[pool.Name].Add((writePath, w.Path));
            }

            // A chroot's writable paths are bound read-write and given to Landlock as write rules: the same checks
            // (ReadChroot kept only the well-formed, existing ones).
            if (pool.Chroot is null)
                continue;
            var chrootSection = p.GetChildren().First(c => c.Key.Equals("chroot", StringComparison.OrdinalIgnoreCase));
            foreach (var w in chrootSection.GetSection("writable").GetChildren())
            {
                var writePath = w.Value is { } v && System.IO.Path.IsPathRooted(v) ? System.IO.Path.GetFullPath(v).TrimEnd('/') : null;
                if (writePath is null || !pool.Chroot.Writable.Contains(writePath, StringComparer.Ordinal))
                    continue;
                if (LandlockRules.CheckWritePath(writePath, pool, vhosts.Values, full, allowFile: true) is { } why)
                    ctx.Error(w.Path, why);
                else
                    acceptedWrites[pool.Name].Add((writePath, w.Path));
            }
        }

        foreach (var (poolName, writes) in acceptedWrites)
        {
            foreach (var (writePath, jsonPath) in writes)
            {
                var others = acceptedWrites.Where(o => o.Key != poolName).SelectMany(o => o.Value.Select(x => (Pool: o.Key, x.Path)));
                if (LandlockRules.CheckOtherPools(writePath, others) is { } why)
                    ctx.Error(jsonPath, why);
            }
        }
    }

    /// <summary>A pool's TCP ports, its proxy upstreams' included, within what the jail spec carries.</summary>
    public static void ConnectPorts(ConfigContext ctx, IReadOnlyDictionary<string, PoolConfig> pools, IReadOnlyDictionary<string, VhostConfig> vhosts)
    {
        foreach (var pool in pools.Values)
        {
            var ports = LandlockRules.ConnectPorts(pool, vhosts.Values.Where(v => v.ServedBy(pool.Name)));
            if (ports.Count > LandlockRules.MaxConnectPorts)
                ctx.Error($"pools:{pool.Name}:landlock:connectTcp", $"{ports.Count} TCP ports (with the proxy upstreams' ports) exceed the limit of {LandlockRules.MaxConnectPorts}");
        }
    }

    /// <summary>
    /// HTTP/2 coalescing: a browser reuses a connection for any name the certificate covers. If that includes a name
    /// of another pool, HTTP/2 would carry this tenant's requests to the other's worker: such a vhost offers no h2.
    /// </summary>
    public static void Coalescing(Dictionary<string, VhostConfig> vhosts)
    {
        foreach (var v in vhosts.Values.ToList())
        {
            var foreign = vhosts.Values.Where(w => w.Pool != v.Pool).SelectMany(w => w.Names)
                .Where(n => v.Certificates.SelectMany(c => c.DnsNames).Any(san => CertificateNames.Covers(san, n))).ToList();
            if (foreign.Count > 0)
                vhosts[v.Name] = v with { OfferH2 = false };
        }
    }

    /// <summary>A pool no vhost uses is a mistake.</summary>
    public static void UnusedPools(ConfigContext ctx, IReadOnlyDictionary<string, PoolConfig> pools, IReadOnlyDictionary<string, VhostConfig> vhosts)
    {
        foreach (var pool in pools.Keys.Where(p => !vhosts.Values.Any(v => v.ServedBy(p))))
            ctx.Error($"pools:{pool}", "no vhost uses this pool");
    }

    /// <summary>
    /// Limits this machine cannot apply: an error only when the config says they are required (otherwise the master
    /// warns at start and <c>check</c> prints a warning).
    /// </summary>
    public static void CgroupRequired(ConfigContext ctx, CgroupConfig cgroup, IReadOnlyDictionary<string, PoolConfig> pools)
    {
        if (cgroup.Required && pools.Values.Any(p => p.Cgroup is not null))
        {
            foreach (var (where, reason) in Cgroups.Unavailable(pools.Values, Dispatch.Platform.Cgroups.CgroupHost.Detect()))
                ctx.Error(where, $"{reason}, and cgroup:required is true");
        }
    }

    /// <summary>The metrics endpoint cannot share an address with a listener.</summary>
    public static void MetricsListener(ConfigContext ctx, IPEndPoint? metricsListen, IEnumerable<ListenConfig> listen)
    {
        if (metricsListen is not null && listen.Any(l => l.Endpoint.Equals(metricsListen)))
            ctx.Error("metrics:listen", $"{metricsListen} is also a listener");
    }
}
