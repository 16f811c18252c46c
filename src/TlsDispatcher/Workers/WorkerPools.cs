using Dispatch.Platform.Hosting;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Dispatch.Wire.Payloads;
using Serilog;

namespace Dispatch.TlsDispatcher.Workers;

/// <summary>A worker the dispatcher may hand connections to, through its channel.</summary>
internal sealed class WorkerLink : IDisposable
{
    public WorkerLink(string pool, int id, int pid, IpcChannel channel)
    {
        Pool = pool;
        Id = id;
        Pid = pid;
        Channel = channel;
    }

    public string Pool { get; }

    public int Id { get; }

    public int Pid { get; }

    public IpcChannel Channel { get; }

    /// <summary>Open connections: what the worker last reported, plus those handed since. Guarded by the pools' lock.</summary>
    public int Load { get; set; }

    /// <summary>Connections handed to this worker so far.</summary>
    public ulong Sent { get; set; }

    /// <summary>When the worker last had a connection (for idle reaping).</summary>
    public long LastBusy { get; set; } = Environment.TickCount64;

    public bool Gone { get; set; }

    /// <summary>Connections the worker said it has taken from its channel (its last load report).</summary>
    public ulong Acked { get; set; }

    /// <summary>When the worker last took a connection, or when one was handed to it while it had taken all before.</summary>
    public long ProgressAt { get; set; }

    /// <summary>Since when its channel has been full (0: it was not): no connection goes to it meanwhile.</summary>
    public long StalledSince { get; set; }

    /// <summary>Whether this stall has been logged (it lasted <see cref="WorkerPools.StallReportAfter"/>).</summary>
    public bool StallReported { get; set; }

    /// <summary>What the worker last reported it served, per vhost of its pool (cumulative). Guarded by the pools' lock.</summary>
    public Dictionary<string, VhostTraffic> Traffic { get; } = new(StringComparer.Ordinal);

    /// <summary>Whether a report of a vhost outside its pool has been logged (once per worker).</summary>
    public bool StrayTrafficReported { get; set; }

    public void Dispose() => Channel.Dispose();
}

/// <summary>
/// The dispatcher's view of the workers: per pool, the live workers (least connections first, at most
/// <c>maxConnectionsPerWorker</c> each), at most one request for a new worker in flight, one-shot
/// workers retired after their connection, idle ones beyond <c>minSpare</c> let go. Workers are asked
/// for by pool name only; the master decides everything else and may refuse (limits).
/// </summary>
internal sealed class WorkerPools : IDisposable
{
    private static readonly TimeSpan RefusalBackoff = TimeSpan.FromSeconds(1);

    /// <summary>Refusals said once a minute while they last (the master logs each kind the same way).</summary>
    private readonly RepeatedLines _refusals = new();

    /// <summary>
    /// A worker that takes no connection from its channel for this long while some wait there (or whose channel stays
    /// full this long) has stopped reading: the dispatcher gives it up and the master kills it (docs/faults.md).
    /// </summary>
    public static readonly TimeSpan StuckAfter = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How often a worker whose channel was found full is looked at again while it stays so: a worker busy for a moment
    /// (a flood's connections arriving faster than it takes them, docs/floods.md) gets connections again as soon as it
    /// has read, not at the next tick of the 1 s timer (which made every connection of its pool wait up to a second).
    /// </summary>
    internal static readonly TimeSpan StallRecheck = TimeSpan.FromMilliseconds(5);

    /// <summary>A full channel is logged (Warning) once it has stayed full this long: shorter ones are a busy moment.</summary>
    internal const long StallReportAfter = 1000;
    private bool _watchingStalls;
    private readonly IpcChannel _master;
    private readonly Func<RouteTable> _routes;
    private readonly ILogger _log;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, List<WorkerLink>> _pools = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ulong> _pending = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _refusedUntil = new(StringComparer.Ordinal);

    // Pools whose workers fail to start (the master backs off): until when, and why. Connections find no worker at once.
    private readonly Dictionary<string, (long Until, string Reason)> _failing = new(StringComparer.Ordinal);
    private readonly Dictionary<int, WorkerLink> _byId = [];

    // Every worker whose channel is still read (serving, or let go and finishing), and the traffic of those that exited.
    private readonly HashSet<WorkerLink> _reporting = [];
    private readonly Dictionary<string, VhostTraffic> _carried = new(StringComparer.Ordinal);
    private readonly Timer _idleTimer;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ulong _nextRequest;
    private bool _closed;

    /// <summary>
    /// Where the channels to workers wait for the workers' reports (the dispatcher's <c>ReadinessPoller</c>; null: the
    /// runtime's epoll set, which a worker's every read of a hand-off would wake: <see cref="IpcChannel.FromDescriptor"/>).
    /// </summary>
    public IReadinessWaiter? ChannelReadiness { get; init; }

    /// <summary>The master is exiting: no worker will come any more; connections waiting for one fail now.</summary>
    public void Close()
    {
        lock (_gate)
        {
            _closed = true;
            SignalLocked();
        }
    }

    public WorkerPools(IpcChannel master, Func<RouteTable> routes, ILogger log)
        : this(master, routes, log, TimeSpan.FromSeconds(1))
    {
    }

    /// <summary>
    /// With the period of the timer that reaps idle workers and looks at stuck ones; tests pass
    /// <see cref="Timeout.InfiniteTimeSpan"/> to show what happens without it.
    /// </summary>
    internal WorkerPools(IpcChannel master, Func<RouteTable> routes, ILogger log, TimeSpan housekeepingPeriod)
    {
        _master = master;
        _routes = routes;
        _log = log;
        _idleTimer = new Timer(
            _ =>
            {
                ReapIdle();
                CheckStuck();
            },
            null,
            housekeepingPeriod,
            housekeepingPeriod);
    }

    /// <summary>
    /// A worker of <paramref name="pool"/> with room for one more connection (its load already counted);
    /// waits for one — asking the master for another worker when all are full — until the token fires.
    /// </summary>
    public async Task<WorkerLink> AcquireAsync(string pool, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                var policy = _routes().PoolPolicy(pool);
                WorkerLink? best = null;
                if (_pools.TryGetValue(pool, out var workers))
                {
                    foreach (var w in workers)
                    {
                        if (w.StalledSince == 0 && (policy.MaxConnectionsPerWorker == 0 || w.Load < policy.MaxConnectionsPerWorker) && (best is null || w.Load < best.Load))
                            best = w;
                    }
                }

                if (best is not null && !(policy.OneShot && best.Sent > 0))
                {
                    if (best.Sent <= best.Acked)
                        best.ProgressAt = Environment.TickCount64; // it had taken everything: the clock starts with this one
                    best.Load++;
                    best.Sent++;
                    best.LastBusy = Environment.TickCount64;
                    return best;
                }

                if (_closed)
                    throw new OperationCanceledException("the master is stopping: no more workers");
                if (_failing.TryGetValue(pool, out var failing) && Environment.TickCount64 < failing.Until)
                    throw new PoolFailingException(failing.Reason);
                if (!_pending.ContainsKey(pool) && Environment.TickCount64 >= _refusedUntil.GetValueOrDefault(pool))
                {
                    var id = ++_nextRequest;
                    _pending[pool] = id;
                    // The time is taken before the send: the master may spawn before this thread logs.
                    var asked = StartupTrace.NowMs;
                    _master.Send(new NeedWorker(id, pool));
                    _log.Debug(StartupTrace.Template + " for pool {Pool}", "need-worker", asked, pool);
                }

                changed = _changed.Task;
            }

            // Woken by a new worker, a lower load or a refusal; re-checked at least every 250 ms.
            await Task.WhenAny(changed, Task.Delay(250, cancellationToken)).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
        }
    }

    /// <summary>
    /// Passes <paramref name="fd"/> with <paramref name="meta"/> to a worker of <paramref name="pool"/>,
    /// waiting up to the configured time for one; a worker whose channel fails is dropped and the next
    /// one tried. False when no worker could take it (the caller still owns the descriptor).
    /// </summary>
    public async Task<bool> HandOffAsync(string pool, Connection meta, int fd, DispatcherSettings settings)
    {
        using var wait = new CancellationTokenSource(settings.WorkerWaitMs);
        while (true)
        {
            WorkerLink worker;
            try
            {
                worker = await AcquireAsync(pool, wait.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (_closed)
            {
                _log.Information("Connection {ConnectionId} for pool {Pool} gets no worker: Dispatch is stopping", meta.ConnectionId, pool);
                return false;
            }
            catch (PoolFailingException e)
            {
                _log.Information("Connection {ConnectionId} for pool {Pool} gets no worker now: {Reason}", meta.ConnectionId, pool, e.Message);
                return false;
            }
            catch (OperationCanceledException)
            {
                _log.Warning("No worker of pool {Pool} could take connection {ConnectionId} within {Wait} ms", pool, meta.ConnectionId, settings.WorkerWaitMs);
                return false;
            }

            try
            {
                if (!worker.Channel.TrySend(meta, [fd]))
                {
                    // Its channel is full: it is not reading. Never wait on one worker; try another (or a new one).
                    Stalled(worker);
                    continue;
                }

                if (worker.Sent == 1 && _log.IsEnabled(Serilog.Events.LogEventLevel.Debug))
                    _log.Debug(StartupTrace.Template + " for pool {Pool} (worker {Pid})", "handed", StartupTrace.NowMs, pool, worker.Pid);
                var policy = _routes().PoolPolicy(pool);
                if (policy.OneShot)
                {
                    Drop(worker, "one-shot: its connection is handed over");
                    if (policy.MinSpare > 0)
                        RequestSpare(pool); // so the next connection finds a warm worker
                }

                return true;
            }
            catch (Exception e) when (e is SysCallException or ObjectDisposedException)
            {
                Drop(worker, $"hand-off failed: {e.Message}");
            }
        }
    }

    /// <summary>A hand-off found <paramref name="worker"/>'s channel full: uncount it, and send it nothing until it reads again.</summary>
    private void Stalled(WorkerLink worker)
    {
        bool first;
        bool watch;
        lock (_gate)
        {
            worker.Load--;
            worker.Sent--;
            first = worker.StalledSince == 0;
            if (first)
                worker.StalledSince = Environment.TickCount64;
            watch = !_watchingStalls;
            _watchingStalls = true;
        }

        if (watch)
            _ = WatchStalledAsync();
        if (first)
            _log.Debug("Worker {Pid} of pool {Pool}: its channel is full; no connection goes to it until it reads", worker.Pid, worker.Pool);
    }

    /// <summary>
    /// While a worker's channel is full, looks every <see cref="StallRecheck"/> whether it has room again, and then lets
    /// connections go to it (wakes those waiting in <see cref="AcquireAsync"/>). Ends when no channel is full.
    /// </summary>
    private async Task WatchStalledAsync()
    {
        while (true)
        {
            await Task.Delay(StallRecheck).ConfigureAwait(false);
            List<WorkerLink>? reading = null;
            bool any = false;
            lock (_gate)
            {
                foreach (var w in _pools.Values.SelectMany(l => l))
                {
                    if (w.StalledSince == 0)
                        continue;
                    if (!w.Channel.Writable)
                    {
                        any = true;
                        continue;
                    }

                    w.StalledSince = 0;
                    if (w.StallReported)
                    {
                        w.StallReported = false;
                        (reading ??= []).Add(w);
                    }

                    SignalLocked();
                }

                if (!any || _closed)
                    _watchingStalls = false;
            }

            foreach (var w in reading ?? [])
                _log.Information("Worker {Pid} of pool {Pool} reads its channel again", w.Pid, w.Pool);
            if (!any || _closed)
                return;
        }
    }

    /// <summary>
    /// Workers that stopped reading their channel (stopped, hung, or a program that ignores it): one whose channel has
    /// been full for <see cref="StuckAfter"/>, or that took none of the connections waiting for it for that long, is
    /// given up, and the master is told, which kills it (its waiting connections close rather than hang).
    /// </summary>
    private void CheckStuck()
    {
        var now = Environment.TickCount64;
        var limit = (long)StuckAfter.TotalMilliseconds;
        var stuck = new List<(WorkerLink Worker, string Reason)>();
        var reading = new List<WorkerLink>();
        var full = new List<WorkerLink>();
        lock (_gate)
        {
            foreach (var w in _pools.Values.SelectMany(l => l))
            {
                if (w.StalledSince != 0)
                {
                    if (w.Channel.Writable)
                    {
                        w.StalledSince = 0;
                        if (w.StallReported)
                        {
                            w.StallReported = false;
                            reading.Add(w);
                        }

                        SignalLocked();
                    }
                    else if (now - w.StalledSince > limit)
                    {
                        stuck.Add((w, $"its channel has been full for {(now - w.StalledSince) / 1000} s: it does not read it"));
                    }
                    else if (!w.StallReported && now - w.StalledSince >= StallReportAfter)
                    {
                        w.StallReported = true;
                        full.Add(w);
                    }
                }
                else if (w.Acked > 0 && w.Sent > w.Acked && now - w.ProgressAt > limit)
                {
                    stuck.Add((w, $"it has not taken the {w.Sent - w.Acked} connection(s) waiting in its channel for {(now - w.ProgressAt) / 1000} s"));
                }
            }
        }

        foreach (var w in full)
            _log.Warning("Worker {Pid} of pool {Pool} does not read its channel (full for {Seconds} s): no connection goes to it until it does", w.Pid, w.Pool, StallReportAfter / 1000);
        foreach (var w in reading)
            _log.Information("Worker {Pid} of pool {Pool} reads its channel again", w.Pid, w.Pool);
        foreach (var (w, reason) in stuck)
        {
            _log.Warning("Worker {Pid} of pool {Pool} given up: {Reason}", w.Pid, w.Pool, reason);
            Drop(w, $"given up: {reason}");
            try
            {
                _master.Send(new WorkerGone(w.Id, w.Pool, reason));
            }
            catch (Exception e) when (e is SysCallException or ObjectDisposedException)
            {
                // The master is gone: so is the worker.
            }
        }
    }

    private void RequestSpare(string pool)
    {
        lock (_gate)
        {
            if (_pending.ContainsKey(pool) || Environment.TickCount64 < _refusedUntil.GetValueOrDefault(pool))
                return;
            var id = ++_nextRequest;
            _pending[pool] = id;
            _master.Send(new NeedWorker(id, pool));
        }
    }

    public void OnWorkerReady(WorkerReady ready, int fd)
    {
        var link = new WorkerLink(ready.Pool, ready.WorkerId, ready.Pid, IpcChannel.FromDescriptor(fd, $"worker {ready.Pid} ({ready.Pool})", ChannelReadiness));
        lock (_gate)
        {
            if (!_pools.TryGetValue(ready.Pool, out var workers))
                _pools[ready.Pool] = workers = [];
            workers.Add(link);
            _byId[link.Id] = link;
            _reporting.Add(link);
            if (_pending.TryGetValue(ready.Pool, out var id) && id == ready.RequestId)
                _pending.Remove(ready.Pool);
            _failing.Remove(ready.Pool);
            _refusedUntil.Remove(ready.Pool);
            SignalLocked();
        }

        _log.Information("Worker {Pid} of pool {Pool} joined{Spare}", ready.Pid, ready.Pool, ready.RequestId == 0 ? " as a spare" : string.Empty);
        _ = WatchAsync(link);
    }

    /// <summary>
    /// A WorkerReady whose channel descriptor was lost on arrival (this process had none free): that request is over (the
    /// worker, whose channel end closed with it, exits); the next connection asks again.
    /// </summary>
    public void OnReadyLost(IpcMessage message)
    {
        var reader = new WireReader(message.Payload.Span);
        var ready = WorkerReady.Decode(ref reader);
        lock (_gate)
        {
            if (_pending.TryGetValue(ready.Pool, out var id) && id == ready.RequestId)
                _pending.Remove(ready.Pool);
            SignalLocked();
        }

        _log.Warning("Worker {Pid} of pool {Pool} lost on arrival: this dispatcher has no descriptor left (its nofile limit)", ready.Pid, ready.Pool);
    }

    public void OnRefused(WorkerRefused refused)
    {
        lock (_gate)
        {
            if (_pending.TryGetValue(refused.Pool, out var id) && id == refused.RequestId)
                _pending.Remove(refused.Pool);
            _refusedUntil[refused.Pool] = Environment.TickCount64 + Math.Max((long)RefusalBackoff.TotalMilliseconds, refused.RetryAfterMs);
            if (refused.RetryAfterMs > 0)
                _failing[refused.Pool] = (Environment.TickCount64 + refused.RetryAfterMs, refused.Reason);
            SignalLocked();
        }

        _refusals.Warning(_log, refused.Pool + (refused.RetryAfterMs > 0 ? "\nbackoff" : "\n" + refused.Reason), "No new worker for pool {Pool}: {Reason}", refused.Pool, refused.Reason);
    }

    public void OnGone(WorkerGone gone)
    {
        WorkerLink? link;
        lock (_gate)
            _byId.TryGetValue(gone.WorkerId, out link);
        if (link is not null)
            Drop(link, gone.Reason);
    }

    /// <summary>Removes a worker (exited, failed, retired or idle); closing its channel tells it to finish and exit.</summary>
    public void Drop(WorkerLink link, string reason)
    {
        lock (_gate)
        {
            if (link.Gone)
                return;
            link.Gone = true;
            _byId.Remove(link.Id);
            if (_pools.TryGetValue(link.Pool, out var workers))
                workers.Remove(link);
            SignalLocked();
        }

        _log.Information("Worker {Pid} of pool {Pool} left: {Reason}", link.Pid, link.Pool, reason);

        // Half-closed: the worker finds the end of its channel (so it finishes what it has and exits), and may still
        // report what it served until it closes its end (WatchAsync then ends, and closes ours).
        link.Channel.ShutdownSend();
    }

    /// <summary>A worker's channel has ended (it exited or broke the protocol): its last traffic report is carried.</summary>
    private void Finish(WorkerLink link)
    {
        lock (_gate)
        {
            if (_reporting.Remove(link))
            {
                foreach (var (vhost, traffic) in link.Traffic)
                    _carried[vhost] = _carried.TryGetValue(vhost, out var sum) ? sum.Plus(traffic) : traffic;
            }
        }

        link.Dispose();
    }

    /// <summary>
    /// A worker's report of what it served: believed for the vhosts its pool serves (an identity vhost: each login's
    /// pool), and for those it was believed for before: a reload that moves a vhost to another pool lets the old pool's
    /// workers finish, and their last requests for it still count.
    /// </summary>
    private void OnTraffic(WorkerLink link, WorkerTraffic report)
    {
        var routes = _routes();
        string? stray = null;
        lock (_gate)
        {
            foreach (var v in report.Vhosts)
            {
                if (routes.Serves(link.Pool, v.Vhost) || link.Traffic.ContainsKey(v.Vhost))
                    link.Traffic[v.Vhost] = v;
                else
                    stray ??= v.Vhost;
            }

            if (stray is null || link.StrayTrafficReported)
                stray = null;
            else
                link.StrayTrafficReported = true;
        }

        if (stray is not null)
            _log.Information("Worker {Pid} of pool {Pool} reported traffic of {Vhost}, which is not a vhost of its pool now: not counted", link.Pid, link.Pool, stray);
    }

    /// <summary>
    /// What each vhost of the current routes served, summed over the workers (live, finishing, and exited since this
    /// dispatcher started), with what the dispatcher <paramref name="answered"/> itself for it; vhosts no longer routed
    /// are forgotten.
    /// </summary>
    public List<VhostTraffic> Traffic(Net.VhostAnswers? answered = null)
    {
        var routes = _routes();
        lock (_gate)
        {
            foreach (var vhost in _carried.Keys.Where(v => !routes.HasVhost(v)).ToList())
                _carried.Remove(vhost);
            var sums = new Dictionary<string, VhostTraffic>(_carried, StringComparer.Ordinal);
            foreach (var link in _reporting)
            {
                foreach (var (vhost, traffic) in link.Traffic)
                {
                    if (routes.HasVhost(vhost))
                        sums[vhost] = sums.TryGetValue(vhost, out var sum) ? sum.Plus(traffic) : traffic;
                }
            }

            foreach (var own in answered?.Snapshot(routes.HasVhost) ?? [])
                sums[own.Vhost] = sums.TryGetValue(own.Vhost, out var sum) ? sum.Plus(own) : own;
            return [.. sums.Values];
        }
    }

    /// <summary>After a reload: the workers of these pools finish what they have and leave; new ones start with the new settings.</summary>
    public void Retire(IEnumerable<string> pools)
    {
        List<WorkerLink> retired;
        lock (_gate)
        {
            retired = [.. pools.SelectMany(p => _pools.GetValueOrDefault(p) ?? [])];

            // The master cleared their start backoff: the next connection asks again at once.
            foreach (var pool in pools)
            {
                _failing.Remove(pool);
                _refusedUntil.Remove(pool);
            }
        }

        foreach (var w in retired)
            Drop(w, "its pool changed in a reload");
    }

    /// <summary>Workers idle for their pool's idleTimeout, beyond its minSpare, are let go.</summary>
    private void ReapIdle()
    {
        var now = Environment.TickCount64;
        var idle = new List<WorkerLink>();
        lock (_gate)
        {
            foreach (var policy in _routes().Pools)
            {
                if (policy.IdleTimeoutMs <= 0 || !_pools.TryGetValue(policy.Name, out var workers))
                    continue;
                var keep = workers.Count;
                foreach (var w in workers.OrderBy(w => w.LastBusy))
                {
                    if (keep <= policy.MinSpare)
                        break;
                    if (w.Load == 0 && now - w.LastBusy > policy.IdleTimeoutMs)
                    {
                        idle.Add(w);
                        keep--;
                    }
                }
            }
        }

        foreach (var w in idle)
            Drop(w, "idle");
    }

    private void SignalLocked()
    {
        var old = _changed;
        _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        old.TrySetResult();
    }

    /// <summary>
    /// A worker may only report its load and its traffic (<see cref="WorkerPeer"/>); anything else, or a malformed
    /// message, drops it. Read until the worker closes its end, also once it is let go (its last traffic reports).
    /// </summary>
    private async Task WatchAsync(WorkerLink link)
    {
        var peer = WorkerPeer.Create(report =>
        {
            lock (_gate)
            {
                if (link.Gone)
                    return; // let go: it only finishes what it has
                // What it has, plus what is on its way to it.
                var inFlight = link.Sent > report.Received ? link.Sent - report.Received : 0;
                var load = (int)Math.Min(report.OpenConnections + inFlight, int.MaxValue);
                var lower = load < link.Load;
                link.Load = load;
                if (report.Received > link.Acked)
                {
                    link.Acked = report.Received;
                    link.ProgressAt = Environment.TickCount64;
                }

                if (load > 0)
                    link.LastBusy = Environment.TickCount64;
                if (lower)
                    SignalLocked();
            }
        },
        traffic => OnTraffic(link, traffic));
        try
        {
            while (await link.Channel.ReceiveAsync().ConfigureAwait(false) is { } message)
            {
                using (message)
                    await peer.DispatchAsync(message, link.Gone ? PeerPhase.Draining : PeerPhase.Serving).ConfigureAwait(false);
            }

            Drop(link, "channel closed");
        }
        catch (Exception e) when (e is WireException or SysCallException or ObjectDisposedException or System.Net.Sockets.SocketException or OperationCanceledException)
        {
            Drop(link, link.Gone ? "retired" : $"protocol violation: {e.Message}");
        }
        finally
        {
            Finish(link);
        }
    }

    /// <summary>Every live worker with its open connections (as the load is counted here) and connections handed in all.</summary>
    public List<WorkerStat> Describe()
    {
        lock (_gate)
            return [.. _pools.Values.SelectMany(l => l).Where(w => !w.Gone).Select(w => new WorkerStat(w.Pid, w.Pool, (uint)Math.Max(0, w.Load), w.Sent))];
    }

    public void Dispose() => _idleTimer.Dispose();
}
