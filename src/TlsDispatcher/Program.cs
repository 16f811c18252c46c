using System.Diagnostics;
using System.Net.Sockets;
using Dispatch.Platform.Confinement;
using Dispatch.Platform.Hosting;
using Dispatch.Platform.Interop;
using Dispatch.Platform.Spawn;
using Dispatch.TlsDispatcher.Http;
using Dispatch.TlsDispatcher.Net;
using Dispatch.TlsDispatcher.Tls;
using Dispatch.TlsDispatcher.Workers;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Dispatch.Wire.Payloads;
using Serilog.Events;

namespace Dispatch.TlsDispatcher;

/// <summary>
/// The dispatcher: unprivileged, jailed, no files. Started by the master; receives its listening
/// sockets and the route snapshot, proves its jail, then routes connections to workers.
/// </summary>
internal static class Program
{
    private const int MaxSnapshotBytes = 64 << 20;

    private static async Task DrainAsync(List<Task> acceptLoops, List<Socket> listeners, List<Frontend> frontends, uint graceMs)
    {
        var deadline = Environment.TickCount64 + graceMs;
        // An accept that completed just before the stop has its connection counted once its loop has run it.
        // The master keeps its own copies of the listening sockets: connections queued in them wait for the next
        // dispatcher (upgrade) instead of being refused, so ours are let go of without disturbing theirs.
        await SharedListener.ReleaseAfterAsync(listeners, Task.WhenAll(acceptLoops), (int)Math.Min(graceMs, 5000)).ConfigureAwait(false);
        while (frontends.Sum(f => f.InFlight) > 0 && Environment.TickCount64 < deadline)
            await Task.Delay(20).ConfigureAwait(false);
    }

    private static async Task<int> Main(string[] args)
    {
        var master = ChildBootstrap.Start(ProcessRole.Dispatcher, args);
        var log = ChildBootstrap.CreateLogger();

        // Identity vhosts verify passwords with the system's libcrypt: loaded now, before any connection, so that a
        // missing library fails here and not at the first login.
        LibCrypt.EnsureLoaded();
        using var stopping = new CancellationTokenSource();
        try
        {
            // The master's messages go through this end's table (MasterPeer): setup, exactly one
            // DispatcherSetup; running, WorkerReady, WorkerRefused, WorkerGone, RouteUpdate, StatsRequest,
            // MetricsReply (only if it serves metrics) and Stop. Anything else is fatal.
            // After Stop the loop goes on (connections accepted before it may still need workers) until
            // the open connections have finished or the grace period is over.
            DispatcherSetup? setup = null;
            RouteTable? routes = null;
            var listeners = new List<Socket>();
            WorkerPools? workers = null;
            MetricsEndpoint? metrics = null;
            var frontends = new List<Frontend>();
            var loops = new List<Task>();
            Task? drained = null;
            var peer = MasterPeer.Create(
                setup: (message, fds) =>
                {
                    setup = message;
                    for (var i = 0; i < message.Listeners.Length; i++)
                        listeners.Add(new Socket(new SafeSocketHandle(fds.Take(i), ownsHandle: true)));
                    var memfd = fds.Take(message.Listeners.Length);
                    try
                    {
                        routes = new RouteTable(SnapshotJson.ParseSnapshot(SealedBlob.Read(memfd, MaxSnapshotBytes)), log);
                    }
                    finally
                    {
                        Libc.Close(memfd);
                    }
                },
                workerReady: (ready, channel) => workers!.OnWorkerReady(ready, channel),
                workerRefused: refused => workers!.OnRefused(refused),
                workerGone: gone => workers!.OnGone(gone),
                routeUpdate: (update, snapshotFd) =>
                {
                    try
                    {
                        // New connections see the new table; open ones keep the one they started with.
                        routes = new RouteTable(SnapshotJson.ParseSnapshot(SealedBlob.Read(snapshotFd, MaxSnapshotBytes)), log, routes);
                    }
                    finally
                    {
                        Libc.Close(snapshotFd);
                    }

                    workers!.Retire(update.RetiredPools);
                    log.Information("Routes updated to version {Version}: {Names} host names ({Reused} TLS credentials kept); retired the workers of {Pools}", routes.Version, routes.Count, routes.Reused, update.RetiredPools.Length == 0 ? "no pool" : string.Join(", ", update.RetiredPools));
                },
                statsRequest: request => DispatcherMetrics.Answer(master, request.RequestId, frontends, workers!),
                metricsReply: (reply, fd) =>
                {
                    if (metrics is null)
                    {
                        if (fd >= 0)
                            Libc.Close(fd);
                        throw new WireException("the master may not send MetricsReply to a dispatcher without the metrics listener");
                    }

                    metrics.OnReply(reply, fd);
                },
                stop: stop =>
                {
                    if (drained is not null)
                    {
                        // Already draining (an upgrade) and now the master exits: no more workers will come.
                        if (stop.Final)
                            workers!.Close();
                        return;
                    }

                    log.Information("Stopping: no new connections, {Grace} ms for the {Open} in flight", stop.GraceMs, frontends.Sum(f => f.InFlight));
                    stopping.Cancel();
                    if (stop.Final)
                        workers!.Close();
                    drained = DrainAsync(loops, listeners, frontends, stop.GraceMs);
                });

            using (var message = await master.ReceiveAsync().ConfigureAwait(false) ?? throw new WireException("master closed the channel during setup"))
                await peer.DispatchAsync(message, PeerPhase.Setup).ConfigureAwait(false);
            if (setup is null || routes is null)
                throw new WireException("no DispatcherSetup");

            master.Send(JailProbe.Run(setup.ProbePaths, setup.ProbeThreads));

            using var limits = new ClientLimits(() => routes.Settings.Limits, log);
            using var poller = new ReadinessPoller { Turns = new ConnectionTurns(limits.OpenFrom) };
            using var pools = workers = new WorkerPools(master, () => routes, log) { ChannelReadiness = poller };
            using var connectionLog = new ConnectionLogBudget(log, "refused, malformed, handshakes failed or timed out");
            // Ready before the first accept: a client already waiting could otherwise make this process ask
            // for a worker before the master has seen it ready.
            master.Send(new Ready($"{listeners.Count} listeners, {routes.Count} names"));
            log.Information("Dispatcher {Pid} serving {Listeners} with {Names} host names", Environment.ProcessId, string.Join(", ", setup.Listeners.Select(l => $"{l.Protocol} {l.Endpoint}")), routes.Count);
            for (var i = 0; i < listeners.Count; i++)
            {
                var info = setup.Listeners[i];
                if (info.Protocol == ListenerProtocols.Metrics)
                {
                    if (metrics is not null)
                        throw new UnreachableException("a second metrics listener: DispatcherSetup.Decode refuses a set-up with more than one");
                    metrics = new MetricsEndpoint(listeners[i], info.Endpoint, master, log);
                    loops.Add(metrics.RunAsync(stopping.Token));
                    continue;
                }

                Frontend frontend = info.Protocol switch
                {
                    ListenerProtocols.Http => new PlainHttpFrontend(listeners[i], info.Endpoint, new TrustedProxies(info.TrustedProxies), () => routes, pools, poller, log) { Limits = limits, ConnectionLog = connectionLog },
                    ListenerProtocols.Tls => new TlsTerminationFrontend(listeners[i], info.Endpoint, new TrustedProxies(info.TrustedProxies), () => routes, pools, poller, log) { Limits = limits, ConnectionLog = connectionLog },
                    // DispatcherSetup.Decode refuses a protocol that is none of ListenerProtocols.All: a new one must be added here.
                    _ => throw new UnreachableException($"listener protocol '{info.Protocol}': DispatcherSetup.Decode refuses what is none of {string.Join(", ", ListenerProtocols.All)}"),
                };
                frontends.Add(frontend);
                loops.Add(frontend.RunAsync(stopping.Token));
            }

            // After a surge of connections (a flood), and once quiet after any, the memory they used goes back to the
            // system; a quiet dispatcher with nothing to trim has no timer running (the next connection starts it).
            // Every second, not two as in a worker: the dispatcher keeps nothing of a handed connection, so what a burst
            // of handshakes grew (garbage, malloc arenas: 20-30 MB after 5,000) is all given back 1-2 s after its end
            // (docs/operations.md, "Memory per idle connection").
            using var trim = new MemoryTrim(() => frontends.Sum(f => f.InFlight), TimeSpan.FromSeconds(1), log, () => frontends.Sum(f => f.TakePeak()), release: KeptArrayPool.Instance.Trim);
            foreach (var frontend in frontends)
                frontend.OnFirstConnection(trim.Wake);
            while (true)
            {
                var receive = master.ReceiveAsync().AsTask();
                if (drained is not null && await Task.WhenAny(receive, drained).ConfigureAwait(false) == drained)
                {
                    log.Information("Dispatcher {Pid} drained: {Open} connections still open at exit", Environment.ProcessId, frontends.Sum(f => f.InFlight));
                    return 0;
                }

                if (await receive.ConfigureAwait(false) is not { } message)
                    break;
                using (message)
                {
                    // A worker whose channel could not be received (no descriptor free here): forget the request, ask again later.
                    if (message.DescriptorsLost && message.Type == MessageType.WorkerReady)
                        pools.OnReadyLost(message);
                    else
                        await peer.DispatchAsync(message, drained is null ? PeerPhase.Serving : PeerPhase.Draining).ConfigureAwait(false);
                }
            }

            // The master is gone: everything Dispatch started ends with it.
            return 0;
        }
        catch (Exception e) when (e is WireException or SysCallException or System.Text.Json.JsonException)
        {
            log.Fatal("Dispatcher {Pid} ending: {Reason}", Environment.ProcessId, e.Message);
            return 1;
        }
        finally
        {
            await stopping.CancelAsync().ConfigureAwait(false);
            log.Dispose();
        }
    }
}
