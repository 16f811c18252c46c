using Dispatch.Master.Channels;
using Dispatch.Master.Config;
using Dispatch.Master.Operations;
using Dispatch.Master.Sockets;
using Dispatch.Platform.Confinement;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Dispatch.Wire.Payloads;
using Serilog;

namespace Dispatch.Master.Children;

/// <summary>
/// Dispatcher slots (<c>dispatcher.processes</c>): each slot's dispatcher started on the slot's listening sockets,
/// its channel served, restarted when it dies, and replaced by an upgrade (the old one drains its open connections).
/// </summary>
internal sealed class DispatcherSlots(
    RunningConfig config, ListeningSockets sockets, ChildLauncher launcher, WorkerTable workers, WorkerStartup startup,
    DispatcherReports reports, StatusReport status, Reloader reloader, MasterCounters counters, ILogger log,
    Action fatal, CancellationToken stop)
{
    private readonly Lock _gate = new();
    private ChildProcess?[] _dispatchers = [];
    // Per slot: completed when an upgrade puts a new dispatcher in the slot.
    private TaskCompletionSource[] _slotChanged = [];
    // Dispatchers replaced by an upgrade, draining their open connections.
    private readonly HashSet<ChildProcess> _retiring = [];

    public int Count
    {
        get
        {
            lock (_gate)
                return _dispatchers.Length;
        }
    }

    /// <summary>The dispatcher of each slot.</summary>
    public ChildProcess[] Current
    {
        get
        {
            lock (_gate)
                return [.. _dispatchers.OfType<ChildProcess>()];
        }
    }

    /// <summary>Starts the dispatcher of every slot, one after the other.</summary>
    public async Task StartAllAsync()
    {
        var n = config.Current.Dispatcher.Processes;
        lock (_gate)
        {
            _dispatchers = new ChildProcess?[n];
            _slotChanged = [.. Enumerable.Range(0, n).Select(_ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously))];
        }

        for (var slot = 0; slot < n; slot++)
        {
            var d = await StartAsync(slot, stop).ConfigureAwait(false);
            lock (_gate)
                _dispatchers[slot] = d;
        }
    }

    /// <summary>Serves every slot until the master stops.</summary>
    public Task ServeAllAsync() => Task.WhenAll(Enumerable.Range(0, Count).Select(ServeSlotAsync));

    /// <summary>The slots' dispatchers still running.</summary>
    public List<ChildProcess> Serving()
    {
        lock (_gate)
            return [.. _dispatchers.OfType<ChildProcess>().Where(d => !d.Exited.IsCompleted)];
    }

    /// <summary>Every live dispatcher, serving or draining.</summary>
    public List<(ChildProcess Dispatcher, bool Retiring)> Live()
    {
        lock (_gate)
            return [.. _dispatchers.OfType<ChildProcess>().Where(d => !d.Exited.IsCompleted).Select(d => (d, false)), .. _retiring.Where(d => !d.Exited.IsCompleted).Select(d => (d, true))];
    }

    /// <summary>Every dispatcher the master still has, draining ones first.</summary>
    public List<ChildProcess> All()
    {
        lock (_gate)
            return [.. _retiring, .. _dispatchers.OfType<ChildProcess>()];
    }

    public DispatcherState StateOf(ChildProcess dispatcher)
    {
        lock (_gate)
            return _retiring.Contains(dispatcher) ? DispatcherState.Draining : Array.IndexOf(_dispatchers, dispatcher) >= 0 ? DispatcherState.Serving : DispatcherState.Gone;
    }

    /// <summary>A child has exited: true if it is one of the slots' dispatchers (its slot's loop restarts it) or a draining one.</summary>
    public bool OnExit(ChildProcess child, int status)
    {
        var state = StateOf(child);
        if (state == DispatcherState.Draining)
            return true;
        if (state == DispatcherState.Gone)
            return false;
        // Its slot's serve loop sees the channel close and restarts it; its workers see their
        // channel to it close, finish what they have and exit.
        if (!stop.IsCancellationRequested)
            log.Error("Dispatcher {Pid} exited unexpectedly ({Status})", child.Pid, ChildProcess.DescribeStatus(status));
        return true;
    }

    /// <summary>
    /// Upgrade of one slot: a new dispatcher started from the binaries installed now, on the slot's sockets, takes the
    /// slot; the old one is retired (its slot's loop drains it). Returns both.
    /// </summary>
    public async Task<(ChildProcess Old, ChildProcess Fresh)> ReplaceAsync(int slot)
    {
        var fresh = await StartAsync(slot, stop).ConfigureAwait(false);
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
        return (old, fresh);
    }

    private async Task<ChildProcess> StartAsync(int slot, CancellationToken cancellationToken)
    {
        void Setup(ChildProcess child)
        {
            // The config in force now, once the dispatcher has said hello.
            var current = config.Current;
            var snapshot = Projections.Snapshot(current, config.Version);
            var memfd = SealedBlob.Create("dispatch-routes", SnapshotJson.Serialize(snapshot));
            try
            {
                var metrics = slot == 0 ? sockets.Metrics : null;
                int[] fds = [.. sockets.For(slot).Select(s => (int)s.SafeHandle.DangerousGetHandle()), .. metrics is null ? Array.Empty<int>() : [(int)metrics.SafeHandle.DangerousGetHandle()], memfd];
                ListenerInfo[] infos = [
                    .. current.Listen.Select(l => new ListenerInfo(l.Protocol, l.Endpoint.ToString(), [.. l.TrustedProxies])),
                    .. metrics is null ? Array.Empty<ListenerInfo>() : [new ListenerInfo(ListenerProtocols.Metrics, current.Operations.MetricsListen!.ToString(), [])],
                ];
                child.Channel.Send(new DispatcherSetup(infos, JailSpecs.ProbePaths(current, []), current.JailProbe.Threads), fds);
                GC.KeepAlive(sockets);
            }
            finally
            {
                Libc.Close(memfd);
            }
        }

        var (dispatcher, _) = await launcher.LaunchAsync(JailSpecs.Dispatcher(config.Current), "dispatcher", Setup, null, cancellationToken).ConfigureAwait(false);
        return dispatcher;
    }

    /// <summary>
    /// Serves one dispatcher slot: its channel until it ends; a dispatcher that dies is restarted with
    /// the same listening sockets (connections queued meanwhile wait in them), at most 5 times a minute.
    /// An upgrade puts a new dispatcher in the slot: the loop serves the new one from then on, and the
    /// old one's channel is served until it has drained.
    /// </summary>
    private async Task ServeSlotAsync(int slot)
    {
        var restarts = new RestartBudget();
        ChildProcess dispatcher;
        lock (_gate)
            dispatcher = _dispatchers[slot]!;
        startup.TopUpSpares(dispatcher);
        var serve = ServeAsync(dispatcher);

        // An upgrade put a new dispatcher in the slot: the old one drains, the new one is served from now on.
        (ChildProcess, Task) TakeOver(ChildProcess old, Task oldServe)
        {
            Retire(old, oldServe);
            ChildProcess current;
            lock (_gate)
                current = _dispatchers[slot]!;
            startup.TopUpSpares(current);
            return (current, ServeAsync(current));
        }

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

                (dispatcher, serve) = TakeOver(dispatcher, serve);
                continue;
            }

            if (stop.IsCancellationRequested)
                return;
            dispatcher.Kill();
            await Task.WhenAny(dispatcher.Exited, Task.Delay(5000)).ConfigureAwait(false);
            if (!restarts.TryTake(Environment.TickCount64, out var count))
            {
                log.Fatal("Dispatcher slot {Slot} died {Count} times within a minute; stopping", slot, count);
                fatal();
                return;
            }

            try
            {
                // The snapshot it gets is the one in force.
                var fresh = await reloader.WithoutReloadAsync(() => StartAsync(slot, stop)).ConfigureAwait(false);
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
                    log.Warning("Dispatcher {Fresh} not needed: an upgrade replaced the dead {Old} meanwhile", fresh.Pid, dispatcher.Pid);
                    fresh.Kill();
                    lock (_gate)
                        _slotChanged[slot] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    (dispatcher, serve) = TakeOver(dispatcher, serve);
                    continue;
                }

                counters.Add("dispatch_dispatcher_restarts_total");
                log.Warning("Dispatcher {Old} ({Status}) replaced by dispatcher {New} on the same listening sockets", dispatcher.Pid, dispatcher.Exited.IsCompleted ? ChildProcess.DescribeStatus(dispatcher.Exited.Result) : "killed", fresh.Pid);
                reports.Forget(dispatcher);
                if (dispatcher.Exited.IsCompleted)
                    dispatcher.Dispose();
                dispatcher = fresh;
                startup.TopUpSpares(dispatcher);
                serve = ServeAsync(dispatcher);
            }
            catch (Exception e) when (e is ChildStartException or SysCallException)
            {
                log.Fatal("Could not restart dispatcher slot {Slot}: {Reason}", slot, e.Message);
                fatal();
                return;
            }
        }
    }

    /// <summary>The dispatcher's channel after setup, through its table (<see cref="DispatcherPeer"/>): anything the table refuses ends it.</summary>
    private Task ServeAsync(ChildProcess dispatcher)
    {
        var peer = DispatcherPeer.Create(
            request => startup.Request(dispatcher, request),
            (stats, traffic) => reports.OnStats(dispatcher, stats, traffic),
            request => status.AnswerMetrics(dispatcher, request),
            gone => KillGivenUp(dispatcher, gone));
        return DispatcherPeer.ServeAsync(dispatcher, peer, () => StateOf(dispatcher) == DispatcherState.Draining, log, stop);
    }

    /// <summary>A dispatcher gave up one of its workers (it stopped reading its channel): it is killed, so that what waits in its channel closes.</summary>
    private void KillGivenUp(ChildProcess dispatcher, WorkerGone gone)
    {
        var worker = workers.Find(gone.WorkerId, dispatcher);
        if (worker is null)
        {
            log.Debug("Dispatcher {Pid} gave up worker {Worker}, which is not one of its own (any more)", dispatcher.Pid, gone.WorkerId);
            return;
        }

        log.Warning("Worker {Pid} of pool {Pool} killed: dispatcher {Dispatcher} gave it up ({Reason})", worker.Pid, worker.Name, dispatcher.Pid, new string([.. gone.Reason.Take(256).Select(c => char.IsControl(c) ? '?' : c)]));
        worker.Kill();
    }

    private void Retire(ChildProcess old, Task serve) =>
        FireAndForget.Observe(RetireAsync(old, serve), log, $"Drain of dispatcher {old.Pid}");

    /// <summary>An upgraded-away dispatcher: it and its workers stop accepting and finish within the grace period.</summary>
    private async Task RetireAsync(ChildProcess old, Task serve)
    {
        var grace = config.Current.Dispatcher.StopGrace;
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
        var d = config.Current.Dispatcher;
        var prelude = TimeSpan.FromMilliseconds(Math.Max(d.HeaderTimeout.TotalMilliseconds, d.HandshakeTimeout.TotalMilliseconds)) + TimeSpan.FromSeconds(1);
        var delay = prelude < grace ? prelude : grace;
        var workersStopped = Task.Delay(delay).ContinueWith(
            _ =>
            {
                foreach (var w in workers.OwnedBy(old))
                    Stop(w, grace - delay);
            },
            TaskScheduler.Default);

        // Its channel is served until it closes: connections it accepted before the switch may still need workers.
        var drained = Task.WhenAll(serve, old.Exited);
        if (await Task.WhenAny(drained, Task.Delay(grace + TimeSpan.FromSeconds(2))).ConfigureAwait(false) != drained && !old.Exited.IsCompleted)
        {
            log.Warning("{Child} did not drain within {Grace}; killing it", old, grace);
            old.Kill();
        }

        await old.Exited.ConfigureAwait(false);
        await workersStopped.ConfigureAwait(false);
        lock (_gate)
            _retiring.Remove(old);
        log.Information("Dispatcher {Pid} drained and exited ({Status})", old.Pid, ChildProcess.DescribeStatus(old.Exited.Result));
        reports.Forget(old);
        old.Dispose();
    }
}
