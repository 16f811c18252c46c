using Dispatch.Master.Files;
using Dispatch.Wire.Payloads;
using Dispatch.Wire.Tls;

namespace Dispatch.Master.Config;

/// <summary>
/// The one place the config is projected onto what the other processes get: the dispatcher's route snapshot and a
/// pool's worker settings. A reload compares these projections (value-equal records) to know which workers to retire.
/// </summary>
internal static class Projections
{
    /// <summary>What the dispatchers route by: vhost names to pools, certificates, their own limits.</summary>
    public static RouteSnapshot Snapshot(DispatchConfig config, long version)
    {
        var d = config.Dispatcher;
        return new RouteSnapshot(
            version,
            new DispatcherSettings((int)d.HeaderTimeout.TotalMilliseconds, d.MaxRequestHead, (int)d.WorkerWait.TotalMilliseconds, (int)d.HandshakeTimeout.TotalMilliseconds) { SendTimeoutMs = (int)d.SendTimeout.TotalMilliseconds, Limits = d.ClientLimits },
            [.. config.Vhosts.Values.Select(VhostRoute)],
            config.DefaultVhost,
            config.Listen.FirstOrDefault(l => l.Protocol == "tls")?.Endpoint.Port ?? 443,
            [.. config.Pools.Values.Select(PoolRoute)]);
    }

    /// <summary>A vhost as the dispatcher sees it: no paths, no uids.</summary>
    public static VhostRoute VhostRoute(VhostConfig v) => new(
        v.Name,
        [.. v.Aliases],
        v.Pool,
        v.TlsMode,
        [.. v.Certificates.Select(c => new CertificatePem(c.ChainPem, c.KeyPem))],
        v.HttpMode,
        v.OfferH2,
        v.Engine,
        v.Identity is { } identity
            ? new VhostIdentity(identity.Realm, [.. identity.Users.Select(u => new IdentityUser(u.Login, u.Hash, u.Pool))], identity.FailuresPerAddress, identity.FailuresPerLogin, (int)identity.FailureWindow.TotalMilliseconds)
            : null);

    /// <summary>How the dispatcher balances a pool.</summary>
    public static PoolRoute PoolRoute(PoolConfig p) =>
        new(p.Name, p.MaxConnectionsPerWorker, p.OneShot, p.MinSpare, (int)p.IdleTimeout.TotalMilliseconds, p.Program is null ? TlsHandOffSupport.BuiltInWorker : p.TlsHandOff);

    /// <summary>What a worker of <paramref name="pool"/> is set up with (<c>WorkerSetup</c>'s JSON).</summary>
    public static PoolSettings PoolSettings(DispatchConfig config, string pool) =>
        PoolSettings(config.Pools[pool], config.Vhosts.Values.Where(v => v.ServedBy(pool)), FastCgiDirectories.For(config, pool));

    /// <summary>What a worker of <paramref name="pool"/> is set up with, from the vhosts it serves.</summary>
    /// <param name="fastCgiDirectory">The pool's php-fpm directory (<see cref="FastCgiDirectories.For"/>).</param>
    public static PoolSettings PoolSettings(PoolConfig pool, IEnumerable<VhostConfig> vhosts, string fastCgiDirectory) =>
        new(pool.Name, [.. vhosts.Select(v => WorkerVhost(v, pool.Name, fastCgiDirectory))], pool.OneShot)
        {
            Timeouts = pool.Timeouts,
        };

    /// <summary>
    /// A vhost as a worker of <paramref name="pool"/> serves it. For an identity vhost the worker gets its own login's
    /// hash only (never another login's), to verify every request again.
    /// </summary>
    public static WorkerVhost WorkerVhost(VhostConfig v, string pool, string fastCgiDirectory) => new(
        v.Name,
        [.. v.Aliases],
        v.Root,
        v.DirectoryListing,
        [.. v.Index],
        v.Cgi,
        v.CgiTimeout,
        v.PassthroughCertDir,
        v.Proxy,
        v.Identity is { } identity && identity.Users.FirstOrDefault(u => u.Pool == pool) is { } login ? new WorkerIdentity(login.Login, login.Hash, identity.Realm) : null,
        FastCgiConfig.ToRoute(v.FastCgi, fastCgiDirectory),
        v.TryFiles.Count == 0 ? null : v.TryFiles,
        v.Web,
        v.AccessLogFormat == Dispatch.Wire.Payloads.WorkerVhost.AccessLogFormats[0] ? null : v.AccessLogFormat);

    /// <summary>
    /// Everything a pool's workers were started with, as one value: a reload retires the pool's workers when it differs
    /// (record equality). What the master or the dispatcher change in place is left out: the dispatcher's balancing
    /// (<see cref="PoolRoute"/>: maxWorkers, minSpare, idleTimeout, maxConnectionsPerWorker, tlsHandOff) and the cgroup
    /// limits' values (written to the pool's group; whether it has a
    /// group, and where, is kept). A new pool setting is part of it unless added to that list.
    /// </summary>
    public static WorkerStart? WorkerStart(DispatchConfig config, string pool)
    {
        if (!config.Pools.TryGetValue(pool, out var p))
            return null;
        var jail = p with
        {
            MaxWorkers = 0,
            MinSpare = 0,
            IdleTimeout = TimeSpan.Zero,
            MaxConnectionsPerWorker = 0,
            TlsHandOff = false,
            Cgroup = p.Cgroup is null ? null : new Dispatch.Platform.Cgroups.CgroupLimits(null, null, null),
        };
        var logs = config.Vhosts.Values.Where(v => v.ServedBy(pool)).Select(v => new VhostLogs(v.AccessLog, v.ErrorLog));
        return new WorkerStart(PoolSettings(config, pool), jail, [.. logs], p.Cgroup is null ? null : config.Cgroup.Root);
    }
}
