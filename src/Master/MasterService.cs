using System.Diagnostics;
using System.Net.Sockets;
using Dispatch.Master.Certificates;
using Dispatch.Master.Channels;
using Dispatch.Master.Children;
using Dispatch.Master.Config;
using Dispatch.Master.Files;
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
    private readonly ILogger _log;
    private readonly Reaper _reaper;
    private readonly ChildLauncher _launcher;
    private readonly PoolCgroups _cgroups;
    private readonly CertificateWatcher _certificates;
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
        _certificates = new CertificateWatcher(log, () => ReloadAsync("certificate changed"));
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
            _certificates.Watch(_config);
            WarnAboutLandlock();
            NotifyReady();
            // What the start allocated, and what re-logging the children's lines did once they fall quiet, goes back to
            // the system (docs/faults.md: the master's RSS after 100,000 connections); a quiet master has no timer running.
            using var trim = new Dispatch.Protocol.Hosting.MemoryTrim(() => StderrPump.Lines.Open, TimeSpan.FromSeconds(2), _log, StderrPump.Lines.TakePeak);
            StderrPump.Lines.Busy = trim.Wake;
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
        if (!await StderrPump.DrainAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false))
            _log.Information("A child's stderr was still open 2 s after the children exited (a process it left behind holds it): its last lines may be lost");
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

    private async Task<ChildProcess> StartDispatcherAsync(int slot, CancellationToken cancellationToken)
    {
        var d = _config.Dispatcher;
        var spec = SpecFor(ProcessRole.Dispatcher, "dispatcher", d.Uid, d.Gid, [], [], [new ResourceLimit(Libc.RLIMIT_NOFILE, d.NoFile, d.NoFile)]);
        var child = await _launcher.StartAsync(spec, "dispatcher", cancellationToken).ConfigureAwait(false);
        try
        {
            var snapshot = Projections.Snapshot(_config, Interlocked.Read(ref _snapshotVersion));
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
            request => _ = AnswerMetricsAsync(dispatcher, request),
            gone => KillGivenUp(dispatcher, gone));
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

    /// <summary>A dispatcher gave up one of its workers (it stopped reading its channel): it is killed, so that what waits in its channel closes.</summary>
    private void KillGivenUp(ChildProcess dispatcher, WorkerGone gone)
    {
        ChildProcess? worker;
        lock (_gate)
            worker = _workers.TryGetValue(gone.WorkerId, out var w) && _ownerOf.GetValueOrDefault(w.Pid) == dispatcher ? w : null;
        if (worker is null)
        {
            _log.Debug("Dispatcher {Pid} gave up worker {Worker}, which is not one of its own (any more)", dispatcher.Pid, gone.WorkerId);
            return;
        }

        _log.Warning("Worker {Pid} of pool {Pool} killed: dispatcher {Dispatcher} gave it up ({Reason})", worker.Pid, worker.Name, dispatcher.Pid, new string([.. gone.Reason.Take(256).Select(c => char.IsControl(c) ? '?' : c)]));
        worker.Kill();
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
        var registered = false;
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
            var settings = Projections.PoolSettings(pool, vhosts, phpFpmDirectory);
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
            _log.Debug(StartupTrace.Template + " for {Child}", "proof-checked", StartupTrace.NowMs, worker);
            var ready = await ChildLauncher.ExpectAsync<Ready>(worker, _stop.Token).ConfigureAwait(false);
            lock (_gate)
            {
                _workers[worker.Pid] = worker;
                _ownerOf[worker.Pid] = dispatcher;
                _starting[pool.Name]--;
                registered = true;
            }

            var given = StartupTrace.NowMs; // before the send: the dispatcher may hand a connection before this line is logged
            dispatcher.Channel.Send(new WorkerReady(request?.RequestId ?? 0, pool.Name, worker.Pid, worker.Pid), [pair.A]);
            _log.Debug(StartupTrace.Template + " for {Child}", "given-to-dispatcher", given, worker);
            _backoff.Succeeded(pool.Name);
            _counters.WorkerSpawned(pool.Name, ok: true);
            _log.Information(
                "Worker {Pid} for pool {Pool} ready (uid {Uid}, gid {Gid}) in {Elapsed:F0} ms{Spare}; {Detail}",
                worker.Pid, pool.Name, pool.Uid, pool.Gid, clock.Elapsed.TotalMilliseconds, request is null ? " as a spare" : string.Empty, ready.Detail);
            _ = WatchWorkerAsync(worker);
        }
        catch (Exception e) when (e is ChildStartException or WireException or SysCallException or OperationCanceledException or IOException or ObjectDisposedException)
        {
            bool dispatcherLeft;
            lock (_gate)
            {
                if (registered)
                {
                    // The worker is ready; only its hand-over to the dispatcher failed.
                    _workers.Remove(worker!.Pid);
                    _ownerOf.Remove(worker.Pid);
                }
                else
                {
                    _starting[pool.Name]--;
                }

                dispatcherLeft = dispatcher.Exited.IsCompleted || _retiring.Contains(dispatcher) || Array.IndexOf(_dispatchers, dispatcher) < 0;
            }

            // Killed, and unknown to the exit handler (not registered, or removed above), so its channel is closed here.
            worker?.Kill();
            worker?.Dispose();
            if (_stop.IsCancellationRequested)
            {
                // Stopping: an abandoned start is no failure of the pool (no backoff, no error); the dispatcher fails
                // the connections still waiting itself, saying why ("Dispatch is stopping").
                _log.Information("Start of a worker for pool {Pool} abandoned: Dispatch is stopping", pool.Name);
                return;
            }

            if (registered)
            {
                // The worker started; the dispatcher that asked for it could not take it: upgraded away and drained (its
                // channel closed: EPIPE), or dead. No failure of the pool either: no backoff, no refusal (the dispatcher
                // and its waiting connections are gone). A live serving dispatcher whose channel fails is restarted by
                // its slot's loop.
                _log.Write(
                    dispatcherLeft ? Serilog.Events.LogEventLevel.Information : Serilog.Events.LogEventLevel.Warning,
                    "Worker {Pid} for pool {Pool} abandoned: dispatcher {Dispatcher} ({State}) could not take it: {Reason}",
                    worker!.Pid, pool.Name, dispatcher.Pid, dispatcher.Exited.IsCompleted ? "exited" : dispatcherLeft ? "draining" : "serving", e.Message);
                return;
            }

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
        _certificates.Dispose();
    }
}
