using Dispatch.Master.Config;
using Dispatch.Platform.Confinement;
using Dispatch.Platform.Interop;
using Dispatch.Platform.Spawn;
using Dispatch.Wire;

namespace Dispatch.Master.Children;

/// <summary>
/// What each child's jail holds, from the config alone (no root, nothing opened): its uid, groups, limits, the paths
/// it may read, execute and write (Landlock), its chroot, and the paths it must prove it cannot open.
/// </summary>
internal static class JailSpecs
{
    /// <summary>At most this many of each kind of foreign path are probed: document roots, keys, logs, write directories.</summary>
    private const int MaxProbeRoots = 8;

    /// <summary>
    /// The most paths of a child's probe list that do not come from <c>jailProbe.paths</c>: /etc/passwd, the config,
    /// <see cref="MaxProbeRoots"/> of each of the four kinds of foreign path, and /home in a chroot.
    /// </summary>
    public const int MaxOwnProbes = 3 + (4 * MaxProbeRoots);

    /// <summary>
    /// The most bytes (UTF-8) of a child's probe list that do not come from <c>jailProbe.paths</c>: what a list holds
    /// (<see cref="JailProof.MaxProbeBytes"/>) less the config's share (<see cref="JailProbeConfig.MaxTotalBytes"/>).
    /// Own probes past it are left out (only with paths of thousands of bytes), as those past <see cref="MaxProbeRoots"/> of a kind are.
    /// </summary>
    public const int MaxOwnProbeBytes = JailProof.MaxProbeBytes - JailProbeConfig.MaxTotalBytes;

    private const string ChrootHome = "/home";
    private static readonly string[] ChrootTmp = ["/tmp"];

    public static JailSpec Dispatcher(DispatchConfig config)
    {
        var d = config.Dispatcher;
        return SpecFor(ProcessRole.Dispatcher, "dispatcher", d.Uid, d.Gid, [], [], [new ResourceLimit(Libc.RLIMIT_NOFILE, d.NoFile, d.NoFile)]);
    }

    /// <summary>php-fpm binaries the pool's vhosts start (fastcgi.spawn).</summary>
    public static List<string> SpawnPrograms(IEnumerable<VhostConfig> vhosts) =>
        [.. vhosts.Select(v => v.FastCgi?.Spawn?.Program).OfType<string>().Distinct()];

    /// <summary>
    /// The jail of a worker of <paramref name="pool"/>. <paramref name="phpFpmDirectory"/> must exist already when
    /// the pool spawns php-fpm (a chroot's existing writable directories are rules of the jail's own).
    /// </summary>
    public static WorkerJail Worker(DispatchConfig config, PoolConfig pool, IReadOnlyList<VhostConfig> vhosts, string phpFpmDirectory, string[] cgroupProcs)
    {
        var roots = vhosts.Select(v => v.Root).Distinct().ToList();
        var cgiDirs = vhosts.SelectMany(v => v.Cgi.Select(c => c.Directory)).Distinct().ToList();
        var certDirs = vhosts.Where(v => v.PassthroughCertDir is not null).SelectMany(v => PassthroughReadPaths(v.PassthroughCertDir!)).ToList();
        // CGI scripts need their interpreters: /usr/bin and /bin by default, or what the pool lists.
        var exec = cgiDirs.Count == 0 ? [] : pool.LandlockExec ?? ["/usr/bin", "/bin"];
        // php-fpm started by the worker (fastcgi.spawn): its binary (through setpriv), its configuration, and a
        // directory of the pool's own for its socket. Its libraries are in /usr/lib, readable already.
        var spawnPrograms = SpawnPrograms(vhosts);
        string[] phpFpmRead = spawnPrograms.Count == 0 ? [] : ["/etc/php", "/usr/share/zoneinfo"];
        string[] phpFpmExec = spawnPrograms.Count == 0 ? [] : [.. spawnPrograms, "/usr/bin/setpriv"];
        string[] phpFpmWrite = spawnPrograms.Count == 0 ? [] : [phpFpmDirectory];
        string[] readPaths = [.. roots, .. cgiDirs, .. certDirs, .. pool.LandlockRead, .. phpFpmRead.Where(Directory.Exists)];
        var chrootSpec = ChrootFor(pool, readPaths, vhosts);
        if (chrootSpec is not null && phpFpmWrite.Length > 0)
            chrootSpec = chrootSpec with { Writable = [.. chrootSpec.Writable, .. phpFpmWrite], ReadOnly = [.. chrootSpec.ReadOnly, .. phpFpmExec.Where(File.Exists)] };
        var spec = SpecFor(
            ProcessRole.Worker, pool.Name, pool.Uid, pool.Gid, pool.Groups, readPaths, pool.Limits, [.. cgiDirs, .. exec, .. (pool.Program is null ? [] : new[] { pool.Program }), .. pool.LandlockExec ?? [], .. phpFpmExec.Where(File.Exists)], pool.Modules, LandlockRules.ConnectPorts(pool, vhosts), pool.Program,
            cgroupProcs, [.. pool.LandlockWrite, .. phpFpmWrite], chrootSpec, pool.Landlock);
        var probes = ProbePaths(config, [.. roots, .. pool.LandlockWrite]);
        // In a chroot these must not merely be denied: they must not exist in the worker's view.
        // (Those of its probes: a root left out of them for its length is not checked either.)
        string[] absent = pool.Chroot is null ? [] : ["/etc/passwd", ChrootHome, .. ForeignRoots(config, roots).Where(probes.Contains)];
        if (pool.Chroot is not null)
            probes = [.. probes, ChrootHome];
        return new WorkerJail(spec, vhosts, probes, absent);
    }

    /// <summary>
    /// A worker's GC heap hard limit: its share of the pool's cgroup <c>memoryMax</c> (one limit for all
    /// the pool's workers, their runtime and code outside the heap, and their CGI children), three
    /// quarters of memoryMax / maxWorkers, at least 32 MiB; null (the runtime's own default) without one.
    /// </summary>
    public static ulong? WorkerHeapHardLimit(PoolConfig pool) =>
        pool.Cgroup?.MemoryMax is { } max ? Math.Max(32UL << 20, max / (ulong)Math.Max(1, pool.MaxWorkers) / 4 * 3) : null;

    /// <summary>
    /// What a child must prove it cannot open: the config, other tenants' document roots and write directories (those
    /// not beneath <paramref name="ownRoots"/>), every private key, every log, and <c>jailProbe.paths</c>.
    /// </summary>
    public static string[] ProbePaths(DispatchConfig config, IEnumerable<string> ownRoots)
    {
        var own = ownRoots.Select(r => r.TrimEnd('/') + "/").ToList();
        bool Foreign(string p) => !own.Any(o => (p.TrimEnd('/') + "/").StartsWith(o, StringComparison.Ordinal));
        var roots = ForeignRoots(config, ownRoots);
        // Every certificate directory too: only the master reads keys (it sends terminated vhosts' keys to the dispatcher).
        var certs = config.Vhosts.Values.SelectMany(v => v.Certificates).Select(c => Path.Combine(c.Directory, "privkey.pem")).Take(MaxProbeRoots);
        // Access and error logs: a worker writes only to the descriptors it was given and can open none.
        var logs = config.Vhosts.Values.SelectMany(v => new[] { v.AccessLog, v.ErrorLog }).OfType<string>().Distinct().Take(MaxProbeRoots);
        // Other pools' write directories (uploads, caches).
        var writable = config.Pools.Values.SelectMany(p => p.LandlockWrite).Distinct().Where(Foreign).Take(MaxProbeRoots);
        string[] masters = ["/etc/passwd", config.SourcePath, .. roots, .. certs, .. logs, .. writable];
        // A chroot worker adds /home (Worker): its bytes are kept free here.
        return [.. WithinBytes(masters, MaxOwnProbeBytes - ChrootHome.Length), .. config.JailProbe.Paths.Where(Foreign)];
    }

    /// <summary>
    /// <paramref name="paths"/> in order, leaving out each that would take them over <paramref name="budget"/> bytes
    /// (UTF-8) and each longer than a path can be (<see cref="JailProof.MaxProbePathBytes"/>: no process can open it).
    /// </summary>
    private static IEnumerable<string> WithinBytes(IEnumerable<string> paths, int budget)
    {
        var left = budget;
        foreach (var path in paths)
        {
            var bytes = System.Text.Encoding.UTF8.GetByteCount(path);
            if (bytes > JailProof.MaxProbePathBytes || bytes > left)
                continue;
            left -= bytes;
            yield return path;
        }
    }

    /// <summary>Other tenants' document roots: those not beneath one of <paramref name="ownRoots"/>.</summary>
    public static IEnumerable<string> ForeignRoots(DispatchConfig config, IEnumerable<string> ownRoots)
    {
        var own = ownRoots.Select(r => r.TrimEnd('/') + "/").ToList();
        return config.Vhosts.Values.Select(v => v.Root).Distinct().Where(p => !own.Any(o => (p.TrimEnd('/') + "/").StartsWith(o, StringComparison.Ordinal))).Take(MaxProbeRoots);
    }

    /// <summary>
    /// What a chroot pool's workers see besides the runtime and the system (which stage 1 adds): every
    /// path the pool may read (roots, CGI directories, passthrough certificates, landlock read/exec
    /// paths, its program, proxy socket directories, extraReadOnly) read-only, and its writable paths.
    /// </summary>
    public static ChrootSpec? ChrootFor(PoolConfig pool, IEnumerable<string> readPaths, IEnumerable<VhostConfig> vhosts)
    {
        if (pool.Chroot is not { } c)
            return null;
        var sockets = vhosts.SelectMany(v => v.Proxy).Where(x => x.Upstream.IsUnixSocket)
            .Select(x => Path.GetDirectoryName(x.Upstream.SocketPath)!)
            .Concat(vhosts.Select(v => v.FastCgi?.Socket).OfType<string>().Select(s => Path.GetDirectoryName(s)!));
        string[] readOnly =
        [
            .. readPaths, .. pool.LandlockExec ?? [], .. pool.Program is null ? [] : new[] { pool.Program }, .. sockets, .. c.ExtraReadOnly,
        ];
        return new ChrootSpec(c.TmpBytes, [.. readOnly.Distinct(StringComparer.Ordinal)], [.. c.Writable.Concat(pool.LandlockWrite).Distinct(StringComparer.Ordinal)]);
    }

    /// <summary>
    /// The tenant's certificate directory and, for the certbot layout, its archive. Only paths: the
    /// master never opens them (the worker's stage 1 opens them O_PATH for the Landlock rule, and the
    /// worker, as the tenant, reads them).
    /// </summary>
    public static IEnumerable<string> PassthroughReadPaths(string certDir)
    {
        yield return certDir;
        var archive = Path.GetFullPath(Path.Combine(certDir, "..", "..", "archive", Path.GetFileName(certDir)));
        yield return archive;
    }

    private static JailSpec SpecFor(
        ProcessRole role, string name, uint uid, uint gid, IReadOnlyList<uint> groups, IEnumerable<string> extraRead, IEnumerable<ResourceLimit> limits,
        IEnumerable<string>? extraExec = null, IEnumerable<ModuleSpec>? modules = null, IEnumerable<ushort>? connectPorts = null, string? program = null, string[]? cgroupProcs = null, IEnumerable<string>? tenantWrite = null,
        ChrootSpec? chroot = null, bool landlock = true) =>
        new(
            role,
            uid,
            gid,
            [.. groups],
            [.. ChildLauncher.RuntimeReadPaths(), .. extraRead],
            [ChildLauncher.ExecutablePath(role), RuntimePaths.ElfInterpreter, .. extraExec ?? []],
            // A chroot's /tmp is a private tmpfs of this worker's own: Landlock lets it write there too.
            // Its writable directories are re-checked by the jail like landlock.write (owned by the pool, on the descriptor); files stay plain rules.
            ["/dev/null", .. chroot is null ? [] : ChrootTmp, .. (chroot?.Writable ?? []).Where(w => !Directory.Exists(w))],
            [.. limits],
            name,
            [.. modules ?? []],
            [.. connectPorts ?? []],
            program ?? string.Empty,
            cgroupProcs ?? [],
            [.. (tenantWrite ?? []).Concat((chroot?.Writable ?? []).Where(Directory.Exists)).Distinct(StringComparer.Ordinal)],
            chroot,
            landlock);
}
