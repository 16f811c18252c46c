using System.Diagnostics;
using Dispatch.Master.Channels;
using Dispatch.Master.Config;
using Dispatch.Master.Files;
using Dispatch.Master.Operations;
using Dispatch.Platform.Confinement;
using Dispatch.Platform.Hosting;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Dispatch.Wire.Payloads;
using Serilog;

namespace Dispatch.Master.Children;

/// <summary>
/// A worker's start, from the dispatcher's request (or a pool's <c>minSpare</c>) to the hand-over: the limits and the
/// backoff, the jail (<see cref="JailSpecs"/>), the launch and setup, the hand-over to the dispatcher, and the
/// refusal when any of it fails. Then its channel is watched, and its exit told to the dispatcher that has it.
/// </summary>
internal sealed class WorkerStartup(
    RunningConfig config, WorkerTable workers, ChildLauncher launcher, PoolCgroups cgroups, MasterCounters counters,
    ILogger log, Func<ChildProcess, DispatcherState> dispatcherState, CancellationToken stop)
{
    /// <summary>Per pool, the backoff after failed starts.</summary>
    public SpawnBackoff Backoff { get; } = new();

    /// <summary>Refusals said once a minute while they last (a pool at its maximum, refused again every second).</summary>
    private readonly RepeatedLines _refusals = new();

    /// <summary>The dispatcher asked for a worker of a pool (NeedWorker): started in the background.</summary>
    public void Request(ChildProcess dispatcher, NeedWorker request)
    {
        if (!config.Current.Pools.TryGetValue(request.Pool, out var pool))
        {
            Refuse(dispatcher, request, $"no pool named '{request.Pool}'");
            return;
        }

        FireAndForget.Observe(StartAsync(dispatcher, pool, request), log, $"Start of a worker for pool {pool.Name}");
    }

    /// <summary>Keeps every pool at its <c>minSpare</c> workers (at start, and after each exit).</summary>
    public void TopUpSpares(ChildProcess dispatcher)
    {
        foreach (var pool in config.Current.Pools.Values.Where(p => p.MinSpare > 0))
        {
            var missing = workers.MissingSpares(pool, dispatcher);
            for (var i = 0; i < missing; i++)
                FireAndForget.Observe(StartAsync(dispatcher, pool, null), log, $"Start of a spare worker for pool {pool.Name}");
        }
    }

    /// <summary>
    /// A worker has exited: forgotten, counted, and its dispatcher told (WorkerGone), which then gets its spares back.
    /// False when it was not a worker the table knows (a dispatcher, or a start that failed).
    /// </summary>
    public bool OnExit(ChildProcess child, int status)
    {
        if (!workers.Remove(child.Pid, out var owner))
            return false;
        cgroups.RemoveStale();
        // A worker let go (idle, one-shot) exits 0; anything else is worth a warning.
        var level = stop.IsCancellationRequested || status == 0 ? Serilog.Events.LogEventLevel.Information : Serilog.Events.LogEventLevel.Warning;
        log.Write(level, "Worker {Pid} of pool {Pool} exited ({Status})", child.Pid, child.Name, ChildProcess.DescribeStatus(status));
        counters.WorkerExited(child.Name, clean: status == 0);
        child.Dispose();
        var ownerRetiring = owner is not null && dispatcherState(owner) == DispatcherState.Draining;
        if (owner is not null && !owner.Exited.IsCompleted && !stop.IsCancellationRequested)
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

        return true;
    }

    /// <summary>
    /// Starts one jailed worker of <paramref name="pool"/> and hands it to the dispatcher, for a
    /// request of the dispatcher's (<paramref name="request"/>) or as a spare (null). Enforces the
    /// pool's and the machine's worker limits.
    /// </summary>
    private async Task StartAsync(ChildProcess dispatcher, PoolConfig pool, NeedWorker? request)
    {
        var current = config.Current;
        var (refusal, retryAfter) = workers.Reserve(pool, current.Limits.MaxWorkers, Backoff);
        if (refusal is not null)
        {
            if (request is not null)
                Refuse(dispatcher, request, refusal, retryAfter);
            return;
        }

        var clock = Stopwatch.StartNew();
        ChildProcess? worker = null;
        (int A, int B) pair = (-1, -1);
        var registered = false;
        try
        {
            var vhosts = current.Vhosts.Values.Where(v => v.ServedBy(pool.Name)).ToList();
            var phpFpmDirectory = FastCgiDirectories.For(current, pool.Name);
            if (JailSpecs.SpawnPrograms(vhosts).Count > 0)
                FastCgiDirectories.Prepare(phpFpmDirectory, pool.Uid, pool.Gid);
            var jail = JailSpecs.Worker(current, pool, vhosts, phpFpmDirectory, cgroups.ProcsFor(pool));
            var settings = Projections.PoolSettings(pool, vhosts, phpFpmDirectory);
            var logBatches = WorkerLogFiles.Batches(vhosts);
            var poolJson = SnapshotJson.Serialize(settings);
            void Setup(ChildProcess started)
            {
                pair = IpcChannel.RawPair(Libc.SOCK_SEQPACKET);
                if (WorkerSetup.Inline(pool.Name, poolJson.Length, jail.Probes))
                {
                    started.Channel.Send(new WorkerSetup(pool.Name, started.Pid, poolJson, jail.Probes, current.JailProbe.Threads, logBatches.Count), [pair.B]);
                }
                else
                {
                    var poolFd = SealedBlob.Create("dispatch-pool", poolJson);
                    try
                    {
                        started.Channel.Send(new WorkerSetup(pool.Name, started.Pid, [], jail.Probes, current.JailProbe.Threads, logBatches.Count), [pair.B, poolFd]);
                    }
                    finally
                    {
                        Libc.Close(poolFd);
                    }
                }

                Libc.Close(pair.B);
                pair.B = -1;
                WorkerLogFiles.Send(started, pool, logBatches);
            }

            (worker, var ready) = await launcher.LaunchAsync(jail.Spec, pool.Name, Setup, jail.Absent, stop, JailSpecs.WorkerHeapHardLimit(pool)).ConfigureAwait(false);
            workers.Register(worker, dispatcher);
            registered = true;
            var given = StartupTrace.NowMs; // before the send: the dispatcher may hand a connection before this line is logged
            dispatcher.Channel.Send(new WorkerReady(request?.RequestId ?? 0, pool.Name, worker.Pid, worker.Pid), [pair.A]);
            log.Debug(StartupTrace.Template + " for {Child}", "given-to-dispatcher", given, worker);
            Backoff.Succeeded(pool.Name);
            counters.WorkerSpawned(pool.Name, ok: true);
            log.Information(
                "Worker {Pid} for pool {Pool} ready (uid {Uid}, gid {Gid}) in {Elapsed:F0} ms{Spare}; {Detail}",
                worker.Pid, pool.Name, pool.Uid, pool.Gid, clock.Elapsed.TotalMilliseconds, request is null ? " as a spare" : string.Empty, ready.Detail);
            FireAndForget.Observe(WorkerPeer.WatchAsync(worker, log, stop), log, $"Watch of worker {worker.Pid}");
        }
        catch (Exception e) when (e is ChildStartException or WireException or SysCallException or OperationCanceledException or IOException or ObjectDisposedException)
        {
            if (registered)
            {
                // The worker is ready; only its hand-over to the dispatcher failed.
                workers.Remove(worker!.Pid, out _);
            }
            else
            {
                workers.CancelStart(pool.Name);
            }

            var dispatcherLeft = dispatcher.Exited.IsCompleted || dispatcherState(dispatcher) != DispatcherState.Serving;

            // Killed, and unknown to the exit handler (not registered, or removed above), so its channel is closed here
            // (a worker that failed during its launch was killed and closed by the launcher already).
            worker?.Kill();
            worker?.Dispose();
            if (stop.IsCancellationRequested)
            {
                // Stopping: an abandoned start is no failure of the pool (no backoff, no error); the dispatcher fails
                // the connections still waiting itself, saying why ("Dispatch is stopping").
                log.Information("Start of a worker for pool {Pool} abandoned: Dispatch is stopping", pool.Name);
                return;
            }

            if (registered)
            {
                // The worker started; the dispatcher that asked for it could not take it: upgraded away and drained (its
                // channel closed: EPIPE), or dead. No failure of the pool either: no backoff, no refusal (the dispatcher
                // and its waiting connections are gone). A live serving dispatcher whose channel fails is restarted by
                // its slot's loop.
                log.Write(
                    dispatcherLeft ? Serilog.Events.LogEventLevel.Information : Serilog.Events.LogEventLevel.Warning,
                    "Worker {Pid} for pool {Pool} abandoned: dispatcher {Dispatcher} ({State}) could not take it: {Reason}",
                    worker!.Pid, pool.Name, dispatcher.Pid, dispatcher.Exited.IsCompleted ? "exited" : dispatcherLeft ? "draining" : "serving", e.Message);
                return;
            }

            var wait = Backoff.Failed(pool.Name, e.Message);
            log.Error("Could not start a worker for pool {Pool}: {Reason}; next attempt in {Backoff:F0} s at the earliest", pool.Name, e.Message, wait.TotalSeconds);
            counters.WorkerSpawned(pool.Name, ok: false);
            if (request is not null)
                Refuse(dispatcher, request, $"worker start failed: {e.Message}", wait);
            if (pool.MinSpare > 0 && !stop.IsCancellationRequested)
                FireAndForget.Observe(RetrySparesAsync(dispatcher, wait), log, $"Retry of the spares of pool {pool.Name}");
        }
        finally
        {
            if (pair.A >= 0)
                Libc.Close(pair.A);
            if (pair.B >= 0)
                Libc.Close(pair.B);
        }
    }

    /// <summary>A pool whose spare failed to start tries again when its backoff ends (clients' requests may come sooner).</summary>
    private async Task RetrySparesAsync(ChildProcess dispatcher, TimeSpan wait)
    {
        try
        {
            await Task.Delay(wait + TimeSpan.FromMilliseconds(50), stop).ConfigureAwait(false);
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
        // Keyed by what the refusal is, not its text: a backoff's says how long is left.
        _refusals.Warning(log, request.Pool + (retryAfter > TimeSpan.Zero ? "\nbackoff" : "\n" + reason), "Refused a worker for pool {Pool}: {Reason}", request.Pool, reason);

        counters.WorkerRefused(request.Pool);
        try
        {
            dispatcher.Channel.Send(new WorkerRefused(request.RequestId, request.Pool, reason) { RetryAfterMs = (int)Math.Ceiling(retryAfter.TotalMilliseconds) });
        }
        catch (SysCallException e)
        {
            log.Error("Could not tell the dispatcher: {Reason}", e.Message);
        }
    }
}
