using System.Diagnostics;
using System.Net.Sockets;
using Dispatch.Master.Children;
using Dispatch.Master.Config;
using Dispatch.Protocol.Hosting;
using Dispatch.Protocol.Interop;
using Dispatch.Protocol.Routing;
using Dispatch.Protocol.Wire;
using Serilog;

namespace Dispatch.Master;

/// <summary>
/// The privileged process: binds the ports, starts and jails the dispatcher and the workers, answers
/// the dispatcher's requests for workers (by pool name only), reaps children. It never reads a byte
/// from a client: listening sockets are only passed on.
/// </summary>
internal sealed partial class MasterService : IDisposable
{
    private const int MaxProbeRoots = 8;
    private DispatchConfig _config;
    private long _snapshotVersion = 1;
    private readonly SemaphoreSlim _reloading = new(1, 1);
    private readonly Dictionary<string, FileSystemWatcher> _certWatchers = new(StringComparer.Ordinal);
    private Timer? _certDebounce;
    private readonly ILogger _log;
    private readonly Reaper _reaper;
    private readonly ChildLauncher _launcher;
    private readonly PoolCgroups _cgroups;
    // Per dispatcher slot, its own listening sockets (SO_REUSEPORT: the kernel spreads connections over the slots).
    private readonly List<List<Socket>> _listeners = [];
    // The Prometheus endpoint's socket (loopback), served by the dispatcher of slot 0.
    private Socket? _metricsListener;
    private Operations.ControlServer? _control;
    private readonly Dictionary<int, ChildProcess> _workers = [];
    private readonly Dictionary<string, int> _starting = [];
    private readonly SpawnBackoff _backoff = new();
    private readonly Lock _gate = new();
    private readonly CancellationTokenSource _stop = new();
    private ChildProcess?[] _dispatchers = [];
    // Per slot: completed when an upgrade puts a new dispatcher in the slot.
    private TaskCompletionSource[] _slotChanged = [];
    // Dispatchers replaced by an upgrade, draining their open connections.
    private readonly HashSet<ChildProcess> _retiring = [];
    private readonly SemaphoreSlim _upgrading = new(1, 1);
    private readonly Dictionary<int, ChildProcess> _ownerOf = [];
    private int _exitCode;

    public MasterService(DispatchConfig config, ILogger log)
    {
        _config = config;
        _log = log;
        _reaper = new Reaper(OnChildExit);
        _launcher = new ChildLauncher(_reaper, log);
        _cgroups = new PoolCgroups(log);
    }

    private volatile bool _immediate;
    // Completed by SIGQUIT: a drain already under way ends at once.
    private readonly TaskCompletionSource _immediateStop = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _stoppingNotified;
    private readonly Lock _notifyGate = new();

    /// <summary>SIGTERM: stop accepting, let open connections finish within the grace period.</summary>
    public void RequestStop()
    {
        // systemd hears it first, on the signal's own thread, whatever the rest of the stop does.
        NotifyStopping($"stopping: open connections have {_config.Dispatcher.StopGrace.TotalSeconds:F0} s to finish");
        CancelStop();
    }

    /// <summary>SIGQUIT: stop now (children get no grace); during a drain, ends it.</summary>
    public void RequestImmediateStop()
    {
        _immediate = true;
        NotifyStopping("stopping at once");
        _immediateStop.TrySetResult();
        CancelStop();
    }

    private void CancelStop()
    {
        try
        {
            // Callbacks run inline; a continuation may go on into the stop itself.
            _stop.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // A signal while the master was already exiting.
        }
    }

    /// <summary>STOPPING=1 with a status line; sent on every stop request and at the latest when the master stops.</summary>
    private void NotifyStopping(string status)
    {
        lock (_notifyGate)
        {
            _stoppingNotified = 1;
            SystemdNotify($"STOPPING=1\nSTATUS={status}");
        }
    }

    /// <summary>READY=1, unless a stop came first (systemd must not hear READY=1 after STOPPING=1).</summary>
    private void NotifyReady()
    {
        lock (_notifyGate)
        {
            if (_stoppingNotified == 0)
                SystemdNotify("READY=1\nSTATUS=serving");
        }
    }

    public async Task<int> RunAsync()
    {
        try
        {
            // A stop asked for before the service existed: start nothing.
            _stop.Token.ThrowIfCancellationRequested();
            // One master per control socket and per port: a second one fails here, saying why, before it binds
            // anything or touches the pools' cgroups (which are the running master's).
            if (Operations.ControlServer.AnotherMasterAnswers(_config.Operations.ControlSocket))
                throw new ChildStartException($"another master answers on the control socket {_config.Operations.ControlSocket}");
            var n = _config.Dispatcher.Processes;
            if (n > 1)
            {
                // The slots share each port through SO_REUSEPORT, which another root process could join as well: first
                // prove that no one listens there (a plain bind fails with EADDRINUSE on any listening socket).
                foreach (var l in _config.Listen)
                    Bind(l, reusePort: false, listen: false).Dispose();
            }

            for (var slot = 0; slot < n; slot++)
                _listeners.Add([.. _config.Listen.Select(l => Bind(l, reusePort: n > 1))]);
            if (_config.Operations.MetricsListen is { } metricsAt)
                _metricsListener = Bind(new ListenConfig(metricsAt, "metrics", []), reusePort: false);
            if (!_cgroups.Apply(_config))
                throw new ChildStartException("a pool's cgroup could not be set up and cgroup:required is true");
            _dispatchers = new ChildProcess?[n];
            _slotChanged = [.. Enumerable.Range(0, n).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously))];
            for (var slot = 0; slot < n; slot++)
                _dispatchers[slot] = await StartDispatcherAsync(slot, _stop.Token).ConfigureAwait(false);
            foreach (var v in _config.Vhosts.Values.Where(v => v.TlsMode == TlsModes.Terminate && !v.OfferH2 && v.Identity is null))
                _log.Warning("Vhost {Vhost}: its certificate also covers names served by another pool, so HTTP/2 is not offered for it (browsers would coalesce those names onto one connection)", v.Name);
            _control = Operations.ControlServer.Start(_config.Operations.ControlSocket, this, _log);
            // The one readiness line, whatever the log level (supervisors and tests wait for it).
            var readiness = _log.IsEnabled(Serilog.Events.LogEventLevel.Information) ? _log : new LoggerConfiguration().WriteTo.Console(formatProvider: System.Globalization.CultureInfo.InvariantCulture).CreateLogger();
            readiness.Information(
                "Dispatch ready: master {MasterPid}; dispatcher {DispatcherPid} (uid {DispatcherUid}){More}; listening {Listeners}",
                Environment.ProcessId,
                _dispatchers[0]!.Pid,
                _dispatchers[0]!.Uid,
                n > 1 ? $"; more dispatchers: {string.Join(", ", _dispatchers.Skip(1).Select(d => d!.Pid))}" : string.Empty,
                string.Join(", ", _config.Listen));
            WatchCertificates();
            WarnAboutLandlock();
            NotifyReady();
            await Task.WhenAll(Enumerable.Range(0, n).Select(ServeSlotAsync)).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // A stop during the start cuts short whatever was starting, however that surfaces.
        catch (Exception e) when (_stop.IsCancellationRequested && e is not OperationCanceledException)
#pragma warning restore CA1031
        {
            _log.Information("Stopped during the start ({Reason})", e.Message);
        }
        catch (ChildStartException e)
        {
            _log.Fatal("Could not start: {Reason}", e.Message);
            _exitCode = 1;
        }
        catch (SocketException e)
        {
            _log.Fatal("Could not listen: {Reason}", e.Message);
            _exitCode = 1;
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
#pragma warning disable CA1031 // Whatever went wrong, systemd must hear STOPPING=1 and the children must stop.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _log.Fatal(e, "Unexpected error; stopping: {Reason}", e.Message);
            _exitCode = 70;
        }

        if (Volatile.Read(ref _stoppingNotified) == 0)
            NotifyStopping(_exitCode == 0 ? "stopping" : "stopping after a fatal error (see the log)");
        await StopChildrenAsync(_immediate ? TimeSpan.Zero : _config.Dispatcher.StopGrace).ConfigureAwait(false);
        _cgroups.RemoveAll();
        _log.Information("Master {Pid} exiting with status {Status}", Environment.ProcessId, _exitCode);
        return _exitCode;
    }

    /// <summary>systemd Type=notify: tells $NOTIFY_SOCKET (a Unix datagram socket) when we are ready or stopping.</summary>
    private void SystemdNotify(string state)
    {
        var path = Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        if (string.IsNullOrEmpty(path))
            return;
        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            var endpoint = path[0] == '@' ? new UnixDomainSocketEndPoint("\0" + path[1..]) : new UnixDomainSocketEndPoint(path);
            socket.SendTo(System.Text.Encoding.UTF8.GetBytes(state), endpoint);
        }
        catch (SocketException e)
        {
            _log.Warning("Could not notify systemd at {Socket}: {Reason}", path, e.Message);
        }
    }

    private static Socket Bind(ListenConfig l, bool reusePort, bool listen = true)
    {
        var socket = new Socket(l.Endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            // SO_REUSEADDR alone (restart over TIME_WAIT). Not SocketOptionName.ReuseAddress: on Linux .NET sets
            // SO_REUSEPORT with it, and a second master then shared our ports silently instead of failing.
            socket.SetRawSocketOption(1 /* SOL_SOCKET */, 2 /* SO_REUSEADDR */, BitConverter.GetBytes(1));
            if (reusePort)
                socket.SetRawSocketOption(1 /* SOL_SOCKET */, 15 /* SO_REUSEPORT */, BitConverter.GetBytes(1));
            if (l.Endpoint.AddressFamily == AddressFamily.InterNetworkV6)
                socket.DualMode = false;
            socket.Bind(l.Endpoint);
            if (listen)
                socket.Listen(4096);
            return socket;
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new SocketException((int)e.SocketErrorCode, $"{l}: {e.Message}");
        }
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

    private static readonly string[] ChrootTmp = ["/tmp"];

    /// <summary>
    /// What a chroot pool's workers see besides the runtime and the system (which stage 1 adds): every
    /// path the pool may read (roots, CGI directories, passthrough certificates, landlock read/exec
    /// paths, its program, proxy socket directories, extraReadOnly) read-only, and its writable paths.
    /// </summary>
    private static ChrootSpec? ChrootFor(PoolConfig pool, IEnumerable<string> readPaths, IEnumerable<VhostConfig> vhosts)
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
    private static IEnumerable<string> PassthroughReadPaths(string certDir)
    {
        yield return certDir;
        var archive = Path.GetFullPath(Path.Combine(certDir, "..", "..", "archive", Path.GetFileName(certDir)));
        yield return archive;
    }

    /// <summary>Other tenants' document roots: those not beneath one of <paramref name="ownRoots"/>.</summary>
    private IEnumerable<string> ForeignRoots(IEnumerable<string> ownRoots)
    {
        var own = ownRoots.Select(r => r.TrimEnd('/') + "/").ToList();
        return _config.Vhosts.Values.Select(v => v.Root).Distinct().Where(p => !own.Any(o => (p.TrimEnd('/') + "/").StartsWith(o, StringComparison.Ordinal))).Take(MaxProbeRoots);
    }

    private string[] ProbePaths(IEnumerable<string> ownRoots)
    {
        var own = ownRoots.Select(r => r.TrimEnd('/') + "/").ToList();
        bool Foreign(string p) => !own.Any(o => (p.TrimEnd('/') + "/").StartsWith(o, StringComparison.Ordinal));
        var roots = ForeignRoots(ownRoots);
        // Every certificate directory too: only the master reads keys (it sends terminated vhosts' keys to the dispatcher).
        var certs = _config.Vhosts.Values.SelectMany(v => v.Certificates).Select(c => Path.Combine(c.Directory, "privkey.pem")).Take(MaxProbeRoots);
        // Access and error logs: a worker writes only to the descriptors it was given and can open none.
        var logs = _config.Vhosts.Values.SelectMany(v => new[] { v.AccessLog, v.ErrorLog }).OfType<string>().Distinct().Take(MaxProbeRoots);
        // Other pools' write directories (uploads, caches).
        var writable = _config.Pools.Values.SelectMany(p => p.LandlockWrite).Distinct().Where(Foreign).Take(MaxProbeRoots);
        return ["/etc/passwd", _config.SourcePath, .. roots, .. certs, .. logs, .. writable, .. _config.JailProbe.Paths.Where(Foreign)];
    }

    private static RouteSnapshot BuildSnapshot(DispatchConfig config, long version)
    {
        var d = config.Dispatcher;
        return new RouteSnapshot(
            version,
            new DispatcherSettings((int)d.HeaderTimeout.TotalMilliseconds, d.MaxRequestHead, (int)d.WorkerWait.TotalMilliseconds, (int)d.HandshakeTimeout.TotalMilliseconds) { SendTimeoutMs = (int)d.SendTimeout.TotalMilliseconds, Limits = d.ClientLimits },
            [.. config.Vhosts.Values.Select(v => new VhostRoute(v.Name, [.. v.Aliases], v.Pool, v.TlsMode, [.. v.Certificates.Select(c => new CertificatePem(c.ChainPem, c.KeyPem))], v.HttpMode, v.OfferH2, v.Engine,
                v.Identity is { } identity ? new VhostIdentity(identity.Realm, [.. identity.Users.Select(u => new IdentityUser(u.Login, u.Hash, u.Pool))], identity.FailuresPerAddress, identity.FailuresPerLogin, (int)identity.FailureWindow.TotalMilliseconds) : null))],
            config.DefaultVhost,
            config.Listen.FirstOrDefault(l => l.Protocol == "tls")?.Endpoint.Port ?? 443,
            [.. config.Pools.Values.Select(p => new PoolRoute(p.Name, p.MaxConnectionsPerWorker, p.OneShot, p.MinSpare, (int)p.IdleTimeout.TotalMilliseconds, p.Program is null ? Dispatch.Protocol.Tls.TlsHandOffSupport.BuiltInWorker : p.TlsHandOff))]);
    }

    /// <summary>
    /// A vhost as a worker of <paramref name="pool"/> serves it. For an identity vhost the worker gets its own login's
    /// hash only (never another login's), to verify every request again.
    /// </summary>
    private static WorkerVhost ToWorkerVhost(VhostConfig v, string pool, string fastCgiDirectory) => new(
        v.Name, [.. v.Aliases], v.Root, v.DirectoryListing, [.. v.Index], [.. v.Cgi.Select(c => new CgiRoute(c.UrlPrefix, c.Directory))], (int)v.CgiTimeout.TotalMilliseconds, v.PassthroughCertDir, [.. v.Proxy.Select(x => new ProxyRoute(x.UrlPrefix, x.Upstream.ToString(), (int)x.ConnectTimeout.TotalMilliseconds, (int)x.ReadTimeout.TotalMilliseconds))],
        v.Identity is { } identity && identity.Users.FirstOrDefault(u => u.Pool == pool) is { } login ? new WorkerIdentity(login.Login, login.Hash, identity.Realm) : null,
        FastCgiConfig.ToRoute(v.FastCgi, fastCgiDirectory),
        v.TryFiles.Count == 0 ? null : [.. v.TryFiles],
        v.Web);

    /// <summary>Everything a pool's workers were started with; a reload retires a pool's workers when this changes.</summary>
    private static string PoolFingerprint(DispatchConfig config, string pool)
    {
        if (!config.Pools.TryGetValue(pool, out var p))
            return string.Empty;
        var vhosts = config.Vhosts.Values.Where(v => v.ServedBy(pool)).OrderBy(v => v.Name, StringComparer.Ordinal)
            .Select(v => ToWorkerVhost(v, pool, FastCgiDirectories.For(config, pool)));
        var settings = System.Text.Encoding.UTF8.GetString(SnapshotJson.Serialize(new PoolSettings(pool, [.. vhosts], p.OneShot) { Timeouts = p.Timeouts }));
        var logs = string.Join(",", config.Vhosts.Values.Where(v => v.ServedBy(pool)).Select(v => $"{v.AccessLog}+{v.ErrorLog}"));
        return string.Join(
            "|", settings, p.Uid, p.Gid, string.Join(",", p.Groups), string.Join(",", p.Limits), string.Join(",", p.Modules), p.Program,
            string.Join(",", p.LandlockRead), string.Join(",", p.LandlockExec ?? []), string.Join(",", p.LandlockWrite), string.Join(",", p.ConnectTcp), logs, p.Cgroup is null ? string.Empty : "cgroup " + config.Cgroup.Root, p.Chroot, p.Landlock);
    }

    /// <summary>
    /// SIGHUP or an edit of the config file: validate the new config in full; if it is good, new
    /// connections get the new routes (open ones keep theirs) and the workers of changed or removed
    /// pools finish and leave; if it is not, every error is logged with its JSON path and the last
    /// good config keeps serving. Listeners and the dispatcher's identity need a restart.
    /// </summary>
    public async Task<string> ReloadAsync(string why)
    {
        await _reloading.WaitAsync().ConfigureAwait(false);
        var clock = Stopwatch.StartNew();
        try
        {
            var (fresh, errors) = ConfigLoader.Load(_config.SourcePath);
            if (fresh is null)
            {
                foreach (var e in errors)
                    _log.Error("Reload ({Why}) rejected, the last good configuration keeps serving: {Error}", why, e.ToString());
                var detail = $"rejected ({why}): {string.Join("; ", errors.Take(5))}{(errors.Count > 5 ? $"; and {errors.Count - 5} more" : string.Empty)}";
                RecordReload("rejected", detail);
                return detail;
            }

            if (!fresh.Listen.SequenceEqual(_config.Listen, new ListenComparer()) || fresh.Dispatcher != _config.Dispatcher || fresh.Operations != _config.Operations)
            {
                _log.Error("Reload ({Why}) rejected: changes to listen, dispatcher, control or metrics need a restart; the last good configuration keeps serving", why);
                RecordReload("rejected", $"rejected ({why}): changes to listen, dispatcher, control or metrics need a restart");
                return "rejected: changes to listen, dispatcher, control or metrics need a restart";
            }

            // Limits change in place (the pool's workers stay); a pool that gains or loses its group is retired below.
            _cgroups.Apply(fresh);
            var old = _config;
            var retired = old.Pools.Keys.Where(p => PoolFingerprint(old, p) != PoolFingerprint(fresh, p)).ToArray();
            foreach (var pool in _backoff.Clear(retired))
                _log.Information("Pool {Pool} changed in the reload: its start backoff is cleared", pool);
            var version = Interlocked.Increment(ref _snapshotVersion);
            _config = fresh;
            var memfd = SealedBlob.Create("dispatch-routes", SnapshotJson.Serialize(BuildSnapshot(fresh, version)));
            List<ChildProcess> updated = [.. _dispatchers.OfType<ChildProcess>().Where(d => !d.Exited.IsCompleted)];
            try
            {
                foreach (var d in updated)
                    d.Channel.Send(new RouteUpdate(retired), [memfd]);
            }
            finally
            {
                Libc.Close(memfd);
            }

            // "Reloaded" means new connections get the new routes: each dispatcher has swapped them in (it parses
            // the snapshot, which takes a while with thousands of vhosts) before this is logged or answered.
            var unconfirmed = await UnconfirmedAsync(updated).ConfigureAwait(false);
            var (added, removed, changed) = DiffVhosts(old, fresh);
            _log.Information(
                "Configuration reloaded ({Why}), version {Version}: {Vhosts} vhosts in {Pools} pools; vhosts added {Added}, removed {Removed}, changed {Changed}; workers retired for {Retired}{Included}; in {Elapsed:F0} ms{Unconfirmed}",
                why, version, fresh.Vhosts.Count, fresh.Pools.Count, added, removed, changed, retired.Length == 0 ? "no pool" : string.Join(", ", retired), fresh.Included is null ? string.Empty : $"; include {fresh.Included}", clock.Elapsed.TotalMilliseconds,
                unconfirmed.Count == 0 ? string.Empty : $"; NOT yet confirmed by dispatcher {string.Join(", ", unconfirmed)}");
            foreach (var d in _dispatchers.Where(d => d is { Exited.IsCompleted: false }))
                TopUpSpares(d!);
            WatchCertificates();
            WarnAboutLandlock();
            var summary = $"version {version} ({why}): {fresh.Vhosts.Count} vhosts in {fresh.Pools.Count} pools; workers retired for {(retired.Length == 0 ? "no pool" : string.Join(", ", retired))}";
            RecordReload("ok", summary);
            return "reloaded: " + summary;
        }
        catch (Exception e) when (e is SysCallException or WireException or IOException)
        {
            _log.Error("Reload ({Why}) failed: {Reason}", why, e.Message);
            RecordReload("failed", $"failed ({why}): {e.Message}");
            return "failed: " + e.Message;
        }
        finally
        {
            _reloading.Release();
        }
    }

    /// <summary>The dispatchers (pids) that neither confirmed what was sent to them within <see cref="ConfirmTimeout"/> nor exited.</summary>
    private async Task<List<int>> UnconfirmedAsync(IEnumerable<ChildProcess> dispatchers)
    {
        var asks = dispatchers.Select(async d =>
        {
            try
            {
                var ask = AskStatsAsync(d, ConfirmTimeout);
                if (await Task.WhenAny(ask, d.Exited).ConfigureAwait(false) == ask)
                    await ask.ConfigureAwait(false);
                return 0;
            }
            catch (Exception e) when (e is TimeoutException or SysCallException or ObjectDisposedException)
            {
                return d.Exited.IsCompleted ? 0 : d.Pid;
            }
        });
        return [.. (await Task.WhenAll(asks).ConfigureAwait(false)).Where(pid => pid != 0)];
    }

    private static readonly TimeSpan ConfirmTimeout = TimeSpan.FromSeconds(30);

    /// <summary>
    /// A kernel whose Landlock has no network rules (ABI &lt; 4) cannot hold TCP to the listed ports: said once per
    /// start and reload, per pool that lists any, rather than silently running unrestricted.
    /// </summary>
    private void WarnAboutLandlock()
    {
        var abi = Landlock.AbiVersion();
        if (abi >= Landlock.NetworkAbi)
            return;
        foreach (var pool in _config.Pools.Values)
        {
            var ports = LandlockRules.ConnectPorts(pool, _config.Vhosts.Values.Where(v => v.ServedBy(pool.Name)));
            if (ports.Count > 0 && Landlock.NetworkWarning(abi, ports) is { } warning)
                _log.Warning("Pool {Pool}: {Warning}", pool.Name, warning);
        }

        _log.Warning("Landlock ABI {Abi}: no process's TCP bind or connect is restricted by Landlock on this kernel (needs ABI {Needed})", abi, Landlock.NetworkAbi);
    }

    /// <summary>How many vhosts a reload adds, removes and changes (anything a client or its worker would notice).</summary>
    private static (int Added, int Removed, int Changed) DiffVhosts(DispatchConfig old, DispatchConfig fresh)
    {
        static string Fingerprint(VhostConfig v) => string.Join(
            "|", v.Name, string.Join(",", v.Aliases), v.Pool, v.Root, v.DirectoryListing, string.Join(",", v.Index), v.TlsMode,
            string.Join(",", v.Certificates.Select(c => $"{c.Directory}#{c.Serial}")), v.HttpMode, v.Engine, v.PassthroughCertDir,
            string.Join(",", v.Cgi), v.CgiTimeout, v.AccessLog, v.ErrorLog, string.Join(",", v.Proxy), v.OfferH2, v.Identity, v.FastCgi, string.Join(",", v.TryFiles), v.Web?.Describe());
        var added = fresh.Vhosts.Keys.Count(k => !old.Vhosts.ContainsKey(k));
        var removed = old.Vhosts.Keys.Count(k => !fresh.Vhosts.ContainsKey(k));
        var changed = fresh.Vhosts.Count(kv => old.Vhosts.TryGetValue(kv.Key, out var o) && Fingerprint(o) != Fingerprint(kv.Value));
        return (added, removed, changed);
    }

    /// <summary>
    /// Watches every terminated vhost's certificate directory (certbot swaps the live/ symlinks on
    /// renewal): a change reloads, so new handshakes get the new certificate and open connections
    /// keep theirs. Certificates expiring within 30 days are warned about.
    /// </summary>
    private void WatchCertificates()
    {
        var dirs = _config.Vhosts.Values.SelectMany(v => v.Certificates).Select(c => c.Directory).ToHashSet(StringComparer.Ordinal);
        lock (_certWatchers)
        {
            foreach (var gone in _certWatchers.Keys.Where(k => !dirs.Contains(k)).ToList())
            {
                _certWatchers[gone].Dispose();
                _certWatchers.Remove(gone);
            }

            foreach (var dir in dirs.Where(d => !_certWatchers.ContainsKey(d)))
            {
                var w = new FileSystemWatcher(dir) { NotifyFilter = NotifyFilters.FileName | NotifyFilters.LastWrite | NotifyFilters.Size | NotifyFilters.CreationTime };
                FileSystemEventHandler changed = (_, _) =>
                {
                    var t = new Timer(_ => _ = ReloadAsync("certificate changed"), null, Timeout.Infinite, Timeout.Infinite);
                    Interlocked.Exchange(ref _certDebounce, t)?.Dispose();
                    t.Change(500, Timeout.Infinite);
                };
                w.Changed += changed;
                w.Created += changed;
                w.Renamed += (s, e) => changed(s, e);
                w.EnableRaisingEvents = true;
                _certWatchers[dir] = w;
            }
        }

        foreach (var (vhost, cert) in _config.Vhosts.Values.SelectMany(v => v.Certificates.Select(c => (v.Name, c))))
        {
            var days = (cert.NotAfter - DateTime.UtcNow).TotalDays;
            if (days < 30)
                _log.Warning("Certificate of {Vhost} in {Directory} expires in {Days:F0} days ({NotAfter:u})", vhost, cert.Directory, days, cert.NotAfter);
        }
    }

    private sealed class ListenComparer : IEqualityComparer<ListenConfig>
    {
        public bool Equals(ListenConfig? x, ListenConfig? y) =>
            x is not null && y is not null && x.Endpoint.Equals(y.Endpoint) && x.Protocol == y.Protocol && x.TrustedProxies.SequenceEqual(y.TrustedProxies);

        public int GetHashCode(ListenConfig obj) => obj.Endpoint.GetHashCode();
    }

    /// <summary>
    /// Serves one dispatcher slot: its channel until it ends; a dispatcher that dies is restarted with
    /// the same listening sockets (connections queued meanwhile wait in them), at most 5 times a minute.
    /// An upgrade puts a new dispatcher in the slot: the loop serves the new one from then on, and the
    /// old one's channel is served until it has drained.
    /// </summary>
    private async Task ServeSlotAsync(int slot)
    {
        var restarts = new Queue<long>();
        var dispatcher = _dispatchers[slot]!;
        TopUpSpares(dispatcher);
        var serve = ServeDispatcherAsync(dispatcher);
        while (true)
        {
            Task changed;
            lock (_gate)
                changed = _slotChanged[slot].Task;
            if (await Task.WhenAny(serve, changed).ConfigureAwait(false) == changed)
            {
                lock (_gate)
                {
                    _slotChanged[slot] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    if (_dispatchers[slot] == dispatcher)
                        continue;
                }

                _ = RetireDispatcherAsync(dispatcher, serve);
                dispatcher = _dispatchers[slot]!;
                TopUpSpares(dispatcher);
                serve = ServeDispatcherAsync(dispatcher);
                continue;
            }

            if (_stop.IsCancellationRequested)
                return;
            dispatcher.Kill();
            await Task.WhenAny(dispatcher.Exited, Task.Delay(5000)).ConfigureAwait(false);
            var now = Environment.TickCount64;
            restarts.Enqueue(now);
            while (restarts.Count > 0 && now - restarts.Peek() > 60_000)
                restarts.Dequeue();
            if (restarts.Count > 5)
            {
                _log.Fatal("Dispatcher slot {Slot} died {Count} times within a minute; stopping", slot, restarts.Count);
                _exitCode = 1;
                _stop.Cancel();
                return;
            }

            try
            {
                ChildProcess fresh;
                await _reloading.WaitAsync().ConfigureAwait(false); // the snapshot it gets is the one in force
                try
                {
                    fresh = await StartDispatcherAsync(slot, _stop.Token).ConfigureAwait(false);
                }
                finally
                {
                    _reloading.Release();
                }

                bool adopted;
                lock (_gate)
                {
                    adopted = _dispatchers[slot] == dispatcher;
                    if (adopted)
                        _dispatchers[slot] = fresh;
                }

                if (!adopted)
                {
                    // An upgrade put a dispatcher in this slot meanwhile: keep that one, not this restart.
                    _log.Warning("Dispatcher {Fresh} not needed: an upgrade replaced the dead {Old} meanwhile", fresh.Pid, dispatcher.Pid);
                    fresh.Kill();
                    lock (_gate)
                        _slotChanged[slot] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    _ = RetireDispatcherAsync(dispatcher, serve);
                    dispatcher = _dispatchers[slot]!;
                    TopUpSpares(dispatcher);
                    serve = ServeDispatcherAsync(dispatcher);
                    continue;
                }

                _counters.Add("dispatch_dispatcher_restarts_total");
                _log.Warning("Dispatcher {Old} ({Status}) replaced by dispatcher {New} on the same listening sockets", dispatcher.Pid, dispatcher.Exited.IsCompleted ? ChildProcess.DescribeStatus(dispatcher.Exited.Result) : "killed", fresh.Pid);
                ForgetDispatcher(dispatcher);
                if (dispatcher.Exited.IsCompleted)
                    dispatcher.Dispose();
                dispatcher = fresh;
                TopUpSpares(dispatcher);
                serve = ServeDispatcherAsync(dispatcher);
            }
            catch (Exception e) when (e is ChildStartException or SysCallException)
            {
                _log.Fatal("Could not restart dispatcher slot {Slot}: {Reason}", slot, e.Message);
                _exitCode = 1;
                _stop.Cancel();
                return;
            }
        }
    }

    /// <summary>
    /// SIGUSR2 (or the control command): upgrade without dropping a connection. For each slot, a new
    /// dispatcher starts from the binaries installed now, on the same listening sockets (the master
    /// holds them, so connections queued in them wait for whichever process accepts first); once it
    /// is ready, the old one stops accepting and its workers and it finish what they have within
    /// <c>dispatcher.stopGrace</c>. New workers start from the installed binaries too. If a new
    /// dispatcher cannot start, the old ones keep serving.
    /// </summary>
    public async Task<string> UpgradeAsync(string why)
    {
        if (!await _upgrading.WaitAsync(0).ConfigureAwait(false))
        {
            _log.Warning("Upgrade ({Why}) ignored: an upgrade is already in progress", why);
            return "an upgrade is already in progress";
        }

        var reloadHeld = false;
        try
        {
            var unsafePath = PathSafety.CheckRootOwned(RuntimePaths.AppDirectory);
            if (unsafePath is not null)
            {
                _log.Error("Upgrade ({Why}) refused: {AppDirectory}: {Reason}; the running processes keep serving", why, RuntimePaths.AppDirectory, unsafePath);
                return $"refused: {unsafePath}";
            }

            if (await ProbeProtocolAsync().ConfigureAwait(false) is { } mismatch)
            {
                _log.Error("Upgrade ({Why}) refused: {Reason}; the running dispatchers keep serving", why, mismatch);
                _counters.Add("dispatch_upgrades_total{result=\"refused\"}");
                return $"refused: {mismatch}";
            }

            _log.Information("Upgrade ({Why}): starting new dispatchers from {AppDirectory}", why, RuntimePaths.AppDirectory);
            // No reload in between: each new dispatcher must start with the routes in force when it takes over.
            await _reloading.WaitAsync().ConfigureAwait(false);
            reloadHeld = true;
            var replaced = new List<string>();
            for (var slot = 0; slot < _dispatchers.Length; slot++)
            {
                var fresh = await StartDispatcherAsync(slot, _stop.Token).ConfigureAwait(false);
                ChildProcess old;
                TaskCompletionSource changed;
                lock (_gate)
                {
                    old = _dispatchers[slot]!;
                    _dispatchers[slot] = fresh;
                    _retiring.Add(old);
                    changed = _slotChanged[slot];
                }

                changed.TrySetResult();
                replaced.Add($"{old.Pid} -> {fresh.Pid}");
            }

            _log.Information("Upgrade ({Why}) complete: dispatchers {Replaced}; the old ones drain", why, string.Join(", ", replaced));
            _counters.Add("dispatch_upgrades_total{result=\"ok\"}");
            return $"upgraded: dispatchers {string.Join(", ", replaced)}";
        }
        catch (Exception e) when (e is ChildStartException or OperationCanceledException or SysCallException or WireException)
        {
            _log.Error("Upgrade ({Why}) failed, the running dispatchers keep serving: {Reason}", why, e.Message);
            _counters.Add("dispatch_upgrades_total{result=\"failed\"}");
            return $"failed: {e.Message}";
        }
        finally
        {
            if (reloadHeld)
                _reloading.Release();
            _upgrading.Release();
        }
    }

    /// <summary>
    /// The installed binaries' protocol version, read from the stamp in the installed binaries (ProtocolStamp):
    /// null when it matches this master's, else why not. A master cannot talk to children of
    /// another protocol version, so such an upgrade needs a restart of the master.
    /// </summary>
    private static Task<string?> ProbeProtocolAsync()
    {
        // Read from the installed files (IpcChannel.Version, a constant stamped into them), not by
        // running anything: the master's reaper owns every child's exit status.
        var path = ProtocolStamp.CarrierIn(RuntimePaths.AppDirectory);
        try
        {
            var theirs = ProtocolStamp.Read(path);
            return Task.FromResult<string?>(theirs == IpcChannel.Version ? null
                : $"the installed binaries speak protocol {(theirs is null ? "(unknown)" : theirs.Value.ToString(System.Globalization.CultureInfo.InvariantCulture))} and this master {IpcChannel.Version}: restart the master to run them (systemctl restart dispatch)");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return Task.FromResult<string?>($"could not read the protocol version of {path}: {e.Message}");
        }
    }

    /// <summary>An upgraded-away dispatcher: it and its workers stop accepting and finish within the grace period.</summary>
    private async Task RetireDispatcherAsync(ChildProcess old, Task serve)
    {
        var grace = _config.Dispatcher.StopGrace;
        void Stop(ChildProcess c, TimeSpan left)
        {
            try
            {
                c.Channel.Send(new Stop((uint)Math.Max(0, left.TotalMilliseconds), Final: false));
            }
            catch (Exception e) when (e is SysCallException or ObjectDisposedException)
            {
            }
        }

        Stop(old, grace);
        // Its workers are told later: connections it accepted just before the switch are still reading
        // their request head or ClientHello, and are handed to those workers when they finish. After
        // the longest a prelude may take, the workers finish what they have (and close idle keep-alive
        // connections, which lets the old dispatcher's proxied TLS connections end).
        var d = _config.Dispatcher;
        var prelude = TimeSpan.FromMilliseconds(Math.Max(d.HeaderTimeout.TotalMilliseconds, d.HandshakeTimeout.TotalMilliseconds)) + TimeSpan.FromSeconds(1);
        var delay = prelude < grace ? prelude : grace;
        var workersStopped = Task.Delay(delay).ContinueWith(
            _ =>
            {
                List<ChildProcess> workers;
                lock (_gate)
                    workers = [.. _workers.Values.Where(w => _ownerOf.GetValueOrDefault(w.Pid) == old)];
                foreach (var w in workers)
                    Stop(w, grace - delay);
            },
            TaskScheduler.Default);

        // Its channel is served until it closes: connections it accepted before the switch may still need workers.
        var drained = Task.WhenAll(serve, old.Exited);
        if (await Task.WhenAny(drained, Task.Delay(grace + TimeSpan.FromSeconds(2))).ConfigureAwait(false) != drained && !old.Exited.IsCompleted)
        {
            _log.Warning("{Child} did not drain within {Grace}; killing it", old, grace);
            old.Kill();
        }

        await old.Exited.ConfigureAwait(false);
        await workersStopped.ConfigureAwait(false);
        lock (_gate)
            _retiring.Remove(old);
        _log.Information("Dispatcher {Pid} drained and exited ({Status})", old.Pid, ChildProcess.DescribeStatus(old.Exited.Result));
        ForgetDispatcher(old);
        old.Dispose();
    }

    private async Task<ChildProcess> StartDispatcherAsync(int slot, CancellationToken cancellationToken)
    {
        var d = _config.Dispatcher;
        var spec = SpecFor(ProcessRole.Dispatcher, "dispatcher", d.Uid, d.Gid, [], [], [new ResourceLimit(Libc.RLIMIT_NOFILE, d.NoFile, d.NoFile)]);
        var child = await _launcher.StartAsync(spec, "dispatcher", cancellationToken).ConfigureAwait(false);
        try
        {
            var snapshot = BuildSnapshot(_config, Interlocked.Read(ref _snapshotVersion));
            var memfd = SealedBlob.Create("dispatch-routes", SnapshotJson.Serialize(snapshot));
            try
            {
                var metrics = slot == 0 ? _metricsListener : null;
                int[] fds = [.. _listeners[slot].Select(s => (int)s.SafeHandle.DangerousGetHandle()), .. metrics is null ? Array.Empty<int>() : [(int)metrics.SafeHandle.DangerousGetHandle()], memfd];
                ListenerInfo[] infos = [
                    .. _config.Listen.Select(l => new ListenerInfo(l.Protocol, l.Endpoint.ToString(), [.. l.TrustedProxies])),
                    .. metrics is null ? Array.Empty<ListenerInfo>() : [new ListenerInfo("metrics", _config.Operations.MetricsListen!.ToString(), [])],
                ];
                child.Channel.Send(new DispatcherSetup(infos, ProbePaths([]), _config.JailProbe.Threads), fds);
                GC.KeepAlive(_listeners);
            }
            finally
            {
                Libc.Close(memfd);
            }

            _launcher.CheckProof(child, await ChildLauncher.ExpectAsync<JailProof>(child, cancellationToken).ConfigureAwait(false));
            await ChildLauncher.ExpectAsync<Ready>(child, cancellationToken).ConfigureAwait(false);
            return child;
        }
        catch
        {
            child.Kill();
            throw;
        }
    }

    /// <summary>The dispatcher's channel after setup, through its table (<see cref="DispatcherPeer"/>): anything the table refuses ends it.</summary>
    private async Task ServeDispatcherAsync(ChildProcess dispatcher)
    {
        var peer = DispatcherPeer.Create(
            request => _ = StartWorkerAsync(dispatcher, request),
            stats => OnDispatcherStats(dispatcher, stats),
            request => _ = AnswerMetricsAsync(dispatcher, request));
        while (true)
        {
            IpcMessage? message;
            try
            {
                message = await dispatcher.Channel.ReceiveAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (WireException e)
            {
                _log.Error("Dispatcher {Pid} sent a malformed message, terminating it: {Reason}", dispatcher.Pid, e.Message);
                return;
            }

            bool retiring;
            lock (_gate)
                retiring = _retiring.Contains(dispatcher);
            if (message is null)
            {
                if (!_stop.IsCancellationRequested && !retiring)
                    _log.Error("Dispatcher {Pid} closed its channel", dispatcher.Pid);
                return;
            }

            using (message)
            {
                try
                {
                    await peer.DispatchAsync(message, retiring ? PeerPhase.Draining : PeerPhase.Serving).ConfigureAwait(false);
                }
                catch (WireException e)
                {
                    _log.Error("Dispatcher {Pid} broke the protocol, terminating it: {Reason}", dispatcher.Pid, e.Message);
                    return;
                }
            }
        }
    }

    private Task StartWorkerAsync(ChildProcess dispatcher, NeedWorker request)
    {
        if (!_config.Pools.TryGetValue(request.Pool, out var pool))
        {
            Refuse(dispatcher, request, $"no pool named '{request.Pool}'");
            return Task.CompletedTask;
        }

        return SpawnWorkerAsync(dispatcher, pool, request);
    }

    /// <summary>
    /// Starts one jailed worker of <paramref name="pool"/> and hands it to the dispatcher, for a
    /// request of the dispatcher's (<paramref name="request"/>) or as a spare (null). Enforces the
    /// pool's and the machine's worker limits.
    /// </summary>
    private async Task SpawnWorkerAsync(ChildProcess dispatcher, PoolConfig pool, NeedWorker? request)
    {
        lock (_gate)
        {
            var live = _workers.Values.Count(w => w.Name == pool.Name) + _starting.GetValueOrDefault(pool.Name);
            var total = _workers.Count + _starting.Values.Sum();
            string? refusal = live >= pool.MaxWorkers ? $"pool '{pool.Name}' already has its maximum of {pool.MaxWorkers} workers"
                : total >= _config.Limits.MaxWorkers ? $"the machine already runs its maximum of {_config.Limits.MaxWorkers} workers (limits:maxWorkers)"
                : null;
            if (refusal is not null)
            {
                if (request is not null)
                    Refuse(dispatcher, request, refusal);
                return;
            }

            if (_backoff.Remaining(pool.Name) is { } wait)
            {
                // Its workers fail to start: no new attempt before the backoff ends, and the dispatcher answers 503 now.
                if (request is not null)
                    Refuse(dispatcher, request, $"pool '{pool.Name}' is backing off after failed worker starts; next attempt in {wait.TotalSeconds:F1} s", wait);
                return;
            }

            _starting[pool.Name] = _starting.GetValueOrDefault(pool.Name) + 1;
        }

        var clock = Stopwatch.StartNew();
        ChildProcess? worker = null;
        (int A, int B) pair = (-1, -1);
        try
        {
            var vhosts = _config.Vhosts.Values.Where(v => v.ServedBy(pool.Name)).ToList();
            var roots = vhosts.Select(v => v.Root).Distinct().ToList();
            var cgiDirs = vhosts.SelectMany(v => v.Cgi.Select(c => c.Directory)).Distinct().ToList();
            var certDirs = vhosts.Where(v => v.PassthroughCertDir is not null).SelectMany(v => PassthroughReadPaths(v.PassthroughCertDir!)).ToList();
            // CGI scripts need their interpreters: /usr/bin and /bin by default, or what the pool lists.
            var exec = cgiDirs.Count == 0 ? [] : pool.LandlockExec ?? ["/usr/bin", "/bin"];
            // php-fpm started by the worker (fastcgi.spawn): its binary (through setpriv), its configuration, and a
            // directory of the pool's own for its socket. Its libraries are in /usr/lib, readable already.
            var phpFpmDirectory = FastCgiDirectories.For(_config, pool.Name);
            var spawnPrograms = vhosts.Select(v => v.FastCgi?.Spawn?.Program).OfType<string>().Distinct().ToList();
            string[] phpFpmRead = spawnPrograms.Count == 0 ? [] : ["/etc/php", "/usr/share/zoneinfo"];
            string[] phpFpmExec = spawnPrograms.Count == 0 ? [] : [.. spawnPrograms, "/usr/bin/setpriv"];
            string[] phpFpmWrite = spawnPrograms.Count == 0 ? [] : [phpFpmDirectory];
            if (spawnPrograms.Count > 0)
                FastCgiDirectories.Prepare(phpFpmDirectory, pool.Uid, pool.Gid);
            string[] readPaths = [.. roots, .. cgiDirs, .. certDirs, .. pool.LandlockRead, .. phpFpmRead.Where(Directory.Exists)];
            var chrootSpec = ChrootFor(pool, readPaths, vhosts);
            if (chrootSpec is not null && phpFpmWrite.Length > 0)
                chrootSpec = chrootSpec with { Writable = [.. chrootSpec.Writable, .. phpFpmWrite], ReadOnly = [.. chrootSpec.ReadOnly, .. phpFpmExec.Where(File.Exists)] };
            var spec = SpecFor(
                ProcessRole.Worker, pool.Name, pool.Uid, pool.Gid, pool.Groups, readPaths, pool.Limits, [.. cgiDirs, .. exec, .. (pool.Program is null ? [] : new[] { pool.Program }), .. pool.LandlockExec ?? [], .. phpFpmExec.Where(File.Exists)], pool.Modules, LandlockRules.ConnectPorts(pool, vhosts), pool.Program,
                _cgroups.ProcsFor(pool), [.. pool.LandlockWrite, .. phpFpmWrite], chrootSpec, pool.Landlock);
            worker = await _launcher.StartAsync(spec, pool.Name, _stop.Token, WorkerHeapHardLimit(pool)).ConfigureAwait(false);
            pair = IpcChannel.RawPair(Libc.SOCK_SEQPACKET);
            var settings = new PoolSettings(
                pool.Name,
                [.. vhosts.Select(v => ToWorkerVhost(v, pool.Name, phpFpmDirectory))],
                pool.OneShot)
            {
                Timeouts = pool.Timeouts,
            };
            var logBatches = LogBatches(vhosts);
            var probes = ProbePaths([.. roots, .. pool.LandlockWrite]);
            // In a chroot these must not merely be denied: they must not exist in the worker's view.
            string[] absent = pool.Chroot is null ? [] : ["/etc/passwd", "/home", .. ForeignRoots(roots)];
            if (pool.Chroot is not null)
                probes = [.. probes, "/home"];
            var poolJson = SnapshotJson.Serialize(settings);
            if (poolJson.Length <= WorkerSetup.MaxInlineJson)
            {
                worker.Channel.Send(new WorkerSetup(pool.Name, worker.Pid, poolJson, probes, _config.JailProbe.Threads, logBatches.Count), [pair.B]);
            }
            else
            {
                var poolFd = SealedBlob.Create("dispatch-pool", poolJson);
                try
                {
                    worker.Channel.Send(new WorkerSetup(pool.Name, worker.Pid, [], probes, _config.JailProbe.Threads, logBatches.Count), [pair.B, poolFd]);
                }
                finally
                {
                    Libc.Close(poolFd);
                }
            }

            Libc.Close(pair.B);
            pair.B = -1;
            SendLogFiles(worker, pool, logBatches);
            _launcher.CheckProof(worker, await ChildLauncher.ExpectAsync<JailProof>(worker, _stop.Token).ConfigureAwait(false), absent);
            var ready = await ChildLauncher.ExpectAsync<Ready>(worker, _stop.Token).ConfigureAwait(false);
            lock (_gate)
            {
                _workers[worker.Pid] = worker;
                _ownerOf[worker.Pid] = dispatcher;
                _starting[pool.Name]--;
            }

            dispatcher.Channel.Send(new WorkerReady(request?.RequestId ?? 0, pool.Name, worker.Pid, worker.Pid), [pair.A]);
            _backoff.Succeeded(pool.Name);
            _counters.WorkerSpawned(pool.Name, ok: true);
            _log.Information(
                "Worker {Pid} for pool {Pool} ready (uid {Uid}, gid {Gid}) in {Elapsed:F0} ms{Spare}; {Detail}",
                worker.Pid, pool.Name, pool.Uid, pool.Gid, clock.Elapsed.TotalMilliseconds, request is null ? " as a spare" : string.Empty, ready.Detail);
            _ = WatchWorkerAsync(worker);
        }
        catch (Exception e) when (e is ChildStartException or WireException or SysCallException or OperationCanceledException or IOException)
        {
            lock (_gate)
                _starting[pool.Name]--;
            worker?.Kill();
            var wait = _backoff.Failed(pool.Name, e.Message);
            _log.Error("Could not start a worker for pool {Pool}: {Reason}; next attempt in {Backoff:F0} s at the earliest", pool.Name, e.Message, wait.TotalSeconds);
            _counters.WorkerSpawned(pool.Name, ok: false);
            if (request is not null)
                Refuse(dispatcher, request, $"worker start failed: {e.Message}", wait);
            if (pool.MinSpare > 0 && !_stop.IsCancellationRequested)
                _ = RetrySparesAsync(dispatcher, wait);
        }
        finally
        {
            if (pair.A >= 0)
                Libc.Close(pair.A);
            if (pair.B >= 0)
                Libc.Close(pair.B);
        }
    }

    /// <summary>The vhosts' access logs, then their error logs, in batches of at most one message's descriptors.</summary>
    private static List<(bool Errors, VhostConfig[] Vhosts)> LogBatches(IEnumerable<VhostConfig> vhosts) =>
    [
        .. vhosts.Where(v => v.AccessLog is not null).Chunk(IpcChannel.MaxDescriptors).Select(b => (false, b)),
        .. vhosts.Where(v => v.ErrorLog is not null).Chunk(IpcChannel.MaxDescriptors).Select(b => (true, b)),
    ];

    /// <summary>
    /// Opens the vhosts' access and error logs (root, safe walk: <see cref="TenantLogs"/>) and hands the descriptors to
    /// the worker: LogFiles for access logs, ErrorLogFiles for error logs, each naming its vhosts.
    /// </summary>
    private static void SendLogFiles(ChildProcess worker, PoolConfig pool, IEnumerable<(bool Errors, VhostConfig[] Vhosts)> batches)
    {
        foreach (var (errors, batch) in batches)
        {
            var fds = new List<int>();
            try
            {
                foreach (var v in batch)
                    fds.Add(TenantLogs.Open(errors ? v.ErrorLog! : v.AccessLog!, pool.Gid));
                string[] names = [.. batch.Select(v => v.Name)];
                if (errors)
                    worker.Channel.Send(new ErrorLogFiles(names), [.. fds]);
                else
                    worker.Channel.Send(new LogFiles(names), [.. fds]);
            }
            finally
            {
                foreach (var fd in fds)
                    Libc.Close(fd);
            }
        }
    }

    /// <summary>SIGUSR1 (logrotate): reopen every access and error log and hand the new descriptors to the running workers.</summary>
    public void ReopenLogs()
    {
        List<ChildProcess> workers;
        lock (_gate)
            workers = [.. _workers.Values];
        foreach (var w in workers)
        {
            if (!_config.Pools.TryGetValue(w.Name, out var pool))
                continue;
            try
            {
                SendLogFiles(w, pool, LogBatches(_config.Vhosts.Values.Where(v => v.ServedBy(pool.Name))));
            }
            catch (Exception e) when (e is IOException or SysCallException)
            {
                _log.Error("Could not reopen the logs of worker {Pid} (pool {Pool}): {Reason}", w.Pid, w.Name, e.Message);
            }
        }

        _log.Information("Access and error logs reopened for {Workers} workers", workers.Count);
    }

    /// <summary>
    /// A worker's GC heap hard limit: its share of the pool's cgroup <c>memoryMax</c> (one limit for all
    /// the pool's workers, their runtime and code outside the heap, and their CGI children), three
    /// quarters of memoryMax / maxWorkers, at least 32 MiB; null (the runtime's own default) without one.
    /// </summary>
    internal static ulong? WorkerHeapHardLimit(PoolConfig pool) =>
        pool.Cgroup?.MemoryMax is { } max ? Math.Max(32UL << 20, max / (ulong)Math.Max(1, pool.MaxWorkers) / 4 * 3) : null;

    /// <summary>Keeps every pool at its <c>minSpare</c> workers (at start, and after each exit).</summary>
    private void TopUpSpares(ChildProcess dispatcher)
    {
        foreach (var pool in _config.Pools.Values.Where(p => p.MinSpare > 0))
        {
            int missing;
            lock (_gate)
                missing = pool.MinSpare - _workers.Values.Count(w => w.Name == pool.Name && _ownerOf.GetValueOrDefault(w.Pid) == dispatcher) - _starting.GetValueOrDefault(pool.Name);
            for (var i = 0; i < missing; i++)
                _ = SpawnWorkerAsync(dispatcher, pool, null);
        }
    }

    /// <summary>A pool whose spare failed to start tries again when its backoff ends (clients' requests may come sooner).</summary>
    private async Task RetrySparesAsync(ChildProcess dispatcher, TimeSpan wait)
    {
        try
        {
            await Task.Delay(wait + TimeSpan.FromMilliseconds(50), _stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }

        if (!dispatcher.Exited.IsCompleted)
            TopUpSpares(dispatcher);
    }

    private void Refuse(ChildProcess dispatcher, NeedWorker request, string reason, TimeSpan retryAfter = default)
    {
        _log.Warning("Refused a worker for pool {Pool}: {Reason}", request.Pool, reason);
        _counters.WorkerRefused(request.Pool);
        try
        {
            dispatcher.Channel.Send(new WorkerRefused(request.RequestId, request.Pool, reason) { RetryAfterMs = (int)Math.Ceiling(retryAfter.TotalMilliseconds) });
        }
        catch (SysCallException e)
        {
            _log.Error("Could not tell the dispatcher: {Reason}", e.Message);
        }
    }

    /// <summary>A running worker may send the master nothing (<see cref="WorkerPeer"/>); anything it sends ends it.</summary>
    private async Task WatchWorkerAsync(ChildProcess worker)
    {
        var peer = WorkerPeer.Create();
        try
        {
            using var message = await worker.Channel.ReceiveAsync(_stop.Token).ConfigureAwait(false);
            if (message is not null)
                await peer.DispatchAsync(message, PeerPhase.Serving).ConfigureAwait(false);
        }
        catch (WireException e)
        {
            _log.Error("Worker {Pid} of pool {Pool} broke the protocol, terminating it: {Reason}", worker.Pid, worker.Name, e.Message);
            worker.Kill();
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void OnChildExit(ChildProcess child, int status)
    {
        bool retiring;
        lock (_gate)
            retiring = _retiring.Contains(child);
        if (retiring)
            return;
        if (Array.IndexOf(_dispatchers, child) >= 0)
        {
            // Its slot's serve loop sees the channel close and restarts it; its workers see their
            // channel to it close, finish what they have and exit.
            if (!_stop.IsCancellationRequested)
                _log.Error("Dispatcher {Pid} exited unexpectedly ({Status})", child.Pid, ChildProcess.DescribeStatus(status));
            return;
        }

        bool known;
        ChildProcess? owner;
        lock (_gate)
        {
            known = _workers.Remove(child.Pid);
            _ownerOf.Remove(child.Pid, out owner);
        }

        if (!known)
            return;
        _cgroups.RemoveStale();
        // A worker let go (idle, one-shot) exits 0; anything else is worth a warning.
        var level = _stop.IsCancellationRequested || status == 0 ? Serilog.Events.LogEventLevel.Information : Serilog.Events.LogEventLevel.Warning;
        _log.Write(level, "Worker {Pid} of pool {Pool} exited ({Status})", child.Pid, child.Name, ChildProcess.DescribeStatus(status));
        _counters.WorkerExited(child.Name, clean: status == 0);
        child.Dispose();
        bool ownerRetiring;
        lock (_gate)
            ownerRetiring = owner is not null && _retiring.Contains(owner);
        if (owner is not null && !owner.Exited.IsCompleted && !_stop.IsCancellationRequested)
        {
            try
            {
                owner.Channel.Send(new WorkerGone(child.Pid, child.Name, ChildProcess.DescribeStatus(status)));
            }
            catch (Exception e) when (e is SysCallException or ObjectDisposedException)
            {
            }

            if (!ownerRetiring)
                TopUpSpares(owner);
        }
    }

    private async Task StopChildrenAsync(TimeSpan grace)
    {
        List<ChildProcess> children;
        lock (_gate)
            children = [.. _workers.Values, .. _retiring, .. _dispatchers.OfType<ChildProcess>()];
        foreach (var c in children)
        {
            try
            {
                c.Channel.Send(new Stop((uint)grace.TotalMilliseconds));
            }
            catch (Exception e) when (e is SysCallException or ObjectDisposedException)
            {
            }
        }

        // The dispatchers have closed their copies: closing the master's makes new connections be
        // refused at once instead of waiting in a backlog no one will accept from.
        foreach (var slot in _listeners)
        {
            foreach (var s in slot)
                s.Dispose();
        }

        _metricsListener?.Dispose();
        _control?.Dispose();

        var all = Task.WhenAll(children.Select(c => c.Exited));
        // A stop that began with a grace (SIGTERM) is cut short by SIGQUIT; one without (SIGQUIT) gives Stop(0) its moment.
        Task[] waits = grace > TimeSpan.Zero ? [all, Task.Delay(grace + TimeSpan.FromSeconds(2)), _immediateStop.Task] : [all, Task.Delay(grace + TimeSpan.FromSeconds(2))];
        var done = await Task.WhenAny(waits).ConfigureAwait(false);
        if (done != all && !all.IsCompleted)
        {
            foreach (var c in children.Where(c => !c.Exited.IsCompleted))
            {
                if (done == _immediateStop.Task)
                    _log.Warning("SIGQUIT during the drain: killing {Child}", c);
                else
                    _log.Warning("{Child} did not stop within {Grace}; killing it", c, grace);
                c.Kill();
            }

            await Task.WhenAny(all, Task.Delay(2000)).ConfigureAwait(false);
        }
    }

    public void Dispose()
    {
        foreach (var slot in _listeners)
        {
            foreach (var s in slot)
                s.Dispose();
        }
        _metricsListener?.Dispose();
        _control?.Dispose();
        _stop.Dispose();
        _reaper.Dispose();
        _reloading.Dispose();
        _upgrading.Dispose();
        foreach (var w in _certWatchers.Values)
            w.Dispose();
        _certDebounce?.Dispose();
    }
}
