using System.Net;
using System.Net.Sockets;
using Dispatch.Platform.Confinement;
using Dispatch.Platform.Hosting;
using Dispatch.Platform.Interop;
using Dispatch.Platform.Spawn;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Dispatch.Wire.Payloads;
using Dispatch.Worker.Http;
using Serilog.Events;

namespace Dispatch.Worker;

/// <summary>
/// A pool's worker: started by the master, jailed as the tenant before exec, it serves HTTP on the
/// connections the dispatcher hands over. It talks to the master (setup, stop) and the dispatcher
/// (connections in, load out) and to no one else.
/// </summary>
internal static class Program
{
    private static async Task<int> Main(string[] args)
    {
        var master = ChildBootstrap.Start(ProcessRole.Worker, args);
        var log = ChildBootstrap.CreateLogger();
        log.Debug(StartupTrace.Template, "main", ChildBootstrap.MainEnteredMs);
        // The GC as it runs (docs/modules.md, "Density"): a NativeAOT worker has its settings compiled in, with
        // no runtimeconfig.json to read them from, so the tests read them here.
        if (log.IsEnabled(LogEventLevel.Debug))
            log.Debug("GC configuration: {GcConfiguration}", string.Join(", ", GC.GetConfigurationVariables().OrderBy(v => v.Key, StringComparer.Ordinal).Select(v => $"{v.Key}={v.Value}")));
        using var stopping = new CancellationTokenSource();
        IpcChannel? dispatcher = null;
        try
        {
            // The master's messages go through this end's table (MasterPeer): setup, one WorkerSetup and
            // the LogFiles/ErrorLogFiles it announces; serving, log files again (a reopen) and Stop.
            WorkerSetup? setup = null;
            Stop? stopRequested = null;
            var logs = new LogFileTable(log);
            var peer = MasterPeer.Create(
                (message, fds) =>
                {
                    if (setup is not null)
                        throw new WireException("a second WorkerSetup");
                    setup = message;
                    dispatcher = IpcChannel.FromDescriptor(fds.Take(0), "dispatcher");
                    if (message.PoolJson.Length == 0)
                    {
                        var poolFd = fds.Take(1);
                        try
                        {
                            setup = message with { PoolJson = SealedBlob.Read(poolFd, 64 << 20) };
                        }
                        finally
                        {
                            Libc.Close(poolFd);
                        }
                    }
                },
                logs,
                stop => stopRequested = stop);
            using (var message = await master.ReceiveAsync().ConfigureAwait(false) ?? throw new WireException("master closed the channel during setup"))
            {
                if (message.Type != MessageType.WorkerSetup)
                    throw new WireException($"the master may not send {message.Type} before WorkerSetup");
                await peer.DispatchAsync(message, PeerPhase.Setup).ConfigureAwait(false);
            }

            if (setup is null || dispatcher is null)
                throw new WireException("no WorkerSetup");
            var pool = SnapshotJson.ParsePool(setup.PoolJson);
            logs.JsonAccessLogs.UnionWith(pool.Vhosts.Where(v => v.AccessLogFormat == "json").Select(v => v.Name));
            for (var i = 0; i < setup.LogFileMessages; i++)
            {
                using var message = await master.ReceiveAsync().ConfigureAwait(false) ?? throw new WireException("master closed the channel during setup");
                if (message.Type == MessageType.WorkerSetup)
                    throw new WireException("a second WorkerSetup");
                await peer.DispatchAsync(message, PeerPhase.Setup).ConfigureAwait(false);
            }
            log.Debug(StartupTrace.Template, "setup", StartupTrace.NowMs);
            var proof = JailProbe.Run(setup.ProbePaths, setup.ProbeThreads);
            var proven = StartupTrace.NowMs; // before the send: the master may check it before this line is logged
            master.Send(proof);
            log.Debug(StartupTrace.Template, "proof", proven);

            var vhosts = pool.Vhosts;
            if (vhosts.Any(v => v.Identity is not null))
                LibCrypt.EnsureLoaded();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            await using var server = await WorkerHttpServer.StartAsync(
                vhosts,
                log,
                v => logs.Access.TryGetValue(v.Name, out var file) ? new Serilog.LoggerConfiguration().MinimumLevel.Information().WriteTo.Sink(file).CreateLogger() : log,
                v => logs.Errors.TryGetValue(v.Name, out var file) ? new Serilog.LoggerConfiguration().MinimumLevel.Information().WriteTo.Sink(file).CreateLogger() : null,
                pool.Timeouts ?? WorkerTimeouts.Default,
                stopping.Token).ConfigureAwait(false);
            var started = clock.Elapsed.TotalMilliseconds;
            log.Debug(StartupTrace.Template, "server", StartupTrace.NowMs);
            // A JIT build warms its request pipeline with one request to itself, so that the first client does not
            // pay for compiling it; a NativeAOT build has nothing to compile (docs/coldstart.md: measured there).
            var detail = WarmUpPays
                ? $"server started in {started:F0} ms, warmed by a self-request in {clock.Elapsed.TotalMilliseconds - started:F0} ms ({await WarmUpAsync(server, vhosts[0].Name).ConfigureAwait(false)})"
                : $"server started in {started:F0} ms, no warm-up (NativeAOT: no JIT to warm)";
            log.Debug(StartupTrace.Template, "ready", StartupTrace.NowMs);
            master.Send(new Ready(detail));
            log.Information("Worker {Pid} of pool {Pool} serving {Vhosts}", Environment.ProcessId, pool.Name, string.Join(", ", vhosts.Select(v => v.Name)));

            // Load reports every 100 ms while anything changes; an idle worker stops its timer (no wake-ups at all:
            // a host of a thousand idle workers would otherwise wake ten thousand times a second), and the next
            // connection from the dispatcher starts it again (ServeDispatcherAsync).
            using var load = s_loadTimer = new Timer(_ => ReportLoad(dispatcher, server), null, LoadPeriodMs, LoadPeriodMs);
            // After a surge of connections (a flood), and once quiet after any, the memory they used goes back to the
            // system; a quiet worker with nothing to trim has no timer running (the next connection starts it).
            using var trim = new MemoryTrim(() => server.OpenConnections, TimeSpan.FromSeconds(2), log, server.TakePeakConnections, release: TransportBlockPool.Instance.Trim);
            server.OnFirstConnection(trim.Wake);
            // What each vhost served, to the dispatcher a second after a request (never while idle), and once more when
            // this process ends (the dispose: the last requests of a worker let go, of a one-shot worker, are counted).
            var channel = dispatcher;
            using var traffic = new TrafficReporter(server.Vhosts, report => channel.Send(report));
            var fromDispatcher = ServeDispatcherAsync(dispatcher, server, log);
            var fromMaster = master.ReceiveAsync().AsTask();
            while (true)
            {
                var first = await Task.WhenAny(fromDispatcher, fromMaster).ConfigureAwait(false);
                if (first != fromMaster)
                    break;
                if (await EndsAtMasterMessageAsync().ConfigureAwait(false))
                    return 0;
            }

            await fromDispatcher.ConfigureAwait(false);

            // The dispatcher let this worker go (idle, one-shot, or it is gone): no connection comes any more. What it
            // handed over is served to the end (a connection not yet started by Kestrel must not be taken for an idle
            // one), then Kestrel's graceful stop sends each connection's last bytes, however slowly the client reads
            // (the send timeout bounds that), and this process exits. The master may still speak meanwhile: log files
            // again (served), Stop (its grace then bounds the wait) or nothing more (it is gone: so are we).
            Task? finished = null;
            while (true)
            {
                if (finished is null && server.OpenConnections == 0)
                    finished = server.StopAsync(Timeout.InfiniteTimeSpan);
                var first = await Task.WhenAny(finished ?? Task.Delay(50), fromMaster).ConfigureAwait(false);
                if (first == finished)
                    break;
                if (first == fromMaster && await EndsAtMasterMessageAsync().ConfigureAwait(false))
                    return 0;
            }

            await finished.ConfigureAwait(false);
            return 0;

            // The master's message that fromMaster received: it gone (so are we), log files again (logrotate: the
            // master reopened them) or Stop (its grace, then the end); anything else ends this process (the peer table).
            async Task<bool> EndsAtMasterMessageAsync()
            {
                using var message = await fromMaster.ConfigureAwait(false);
                if (message is null)
                    return true;
                await peer.DispatchAsync(message, PeerPhase.Serving).ConfigureAwait(false);
                if (stopRequested is { } stop)
                {
                    await server.StopAsync(TimeSpan.FromMilliseconds(stop.GraceMs)).ConfigureAwait(false);
                    return true;
                }

                fromMaster = master.ReceiveAsync().AsTask();
                return false;
            }
        }
        catch (Exception e) when (e is WireException or SysCallException or System.Text.Json.JsonException or InvalidOperationException or ArgumentException)
        {
            log.Fatal("Worker {Pid} ending: {Reason}", Environment.ProcessId, e.Message);
            return 1;
        }
        finally
        {
            dispatcher?.Dispose();
            log.Dispose();
        }
    }

    private const int LoadPeriodMs = 100;
    private static long s_lastLoad = -1;
    private static long s_received;
    private static Timer? s_loadTimer;
    private static int s_loadArmed = 1;

    /// <summary>Tells the dispatcher the number of open connections (and received so far) whenever it changed.</summary>
    private static void ReportLoad(IpcChannel dispatcher, WorkerHttpServer server)
    {
        var stamp = LoadStamp(server);
        if (Interlocked.Exchange(ref s_lastLoad, stamp) == stamp)
        {
            if ((stamp & OpenMask) == 0)
                DisarmLoadReports(server, stamp);
            return;
        }

        try
        {
            dispatcher.Send(new WorkerLoad((uint)(stamp & OpenMask), (ulong)(stamp >> 24)));
        }
        catch (Exception e) when (e is SysCallException or ObjectDisposedException)
        {
            // The dispatcher let us go; the main loop sees the channel close.
        }
    }

    private const long OpenMask = (1 << 24) - 1;

    /// <summary>(received so far &lt;&lt; 24) | open connections.</summary>
    private static long LoadStamp(WorkerHttpServer server) => (Interlocked.Read(ref s_received) << 24) | (uint)server.OpenConnections;

    /// <summary>
    /// Nothing open and nothing new since the last report: the timer stops. A connection that arrives meanwhile
    /// (counted before <see cref="ArmLoadReports"/>) is seen by the check after the flag is cleared, or finds the flag
    /// cleared and starts the timer itself; either way it is reported.
    /// </summary>
    private static void DisarmLoadReports(WorkerHttpServer server, long reported)
    {
        try
        {
            s_loadTimer?.Change(Timeout.Infinite, Timeout.Infinite);
        }
        catch (ObjectDisposedException)
        {
            return;
        }

        Interlocked.Exchange(ref s_loadArmed, 0);
        if (LoadStamp(server) != reported)
            ArmLoadReports();
    }

    /// <summary>Starts the load reports again if they were stopped (a connection arrived).</summary>
    private static void ArmLoadReports()
    {
        if (Interlocked.Exchange(ref s_loadArmed, 1) != 0)
            return;
        try
        {
            s_loadTimer?.Change(LoadPeriodMs, LoadPeriodMs);
        }
        catch (ObjectDisposedException)
        {
            // The worker is ending.
        }
    }

    /// <summary>
    /// Whether the warm-up self-request pays: only where code is compiled at run time (JIT). Under NativeAOT
    /// every method is already native code, and the request would only delay Ready.
    /// </summary>
    internal static bool WarmUpPays => System.Runtime.CompilerServices.RuntimeFeature.IsDynamicCodeCompiled;

    /// <summary>
    /// One request through the whole pipeline over a socketpair before saying Ready, so the first
    /// client does not pay for the JIT. Returns the status line seen.
    /// </summary>
    private static async Task<string> WarmUpAsync(WorkerHttpServer server, string host)
    {
        var (mine, theirs) = IpcChannel.RawPair(Libc.SOCK_STREAM);
        using var client = new Socket(new SafeSocketHandle(mine, ownsHandle: true));
        var serverSide = new Socket(new SafeSocketHandle(theirs, ownsHandle: true));
        var info = new HandedConnectionInfo(0, null, null, null, null, null, HandedProtocol.Http1);
        if (!server.TryEnqueue(serverSide, ReadOnlyMemory<byte>.Empty, info))
        {
            serverSide.Dispose();
            return "not accepted";
        }

        await client.SendAsync(System.Text.Encoding.ASCII.GetBytes($"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: dispatch-warmup\r\n\r\n"), SocketFlags.None).ConfigureAwait(false);
        var buffer = new byte[512];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        int n;
        try
        {
            n = await client.ReceiveAsync(buffer, SocketFlags.None, timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // A slow application behind the vhost's root (php-fpm with every child busy): the worker serves anyway.
            return "no answer within 10 s";
        }

        var text = System.Text.Encoding.ASCII.GetString(buffer, 0, n);
        var eol = text.IndexOf('\r', StringComparison.Ordinal);
        return eol > 0 ? text[..eol] : text;
    }

    /// <summary>
    /// Connections from the dispatcher (<see cref="DispatcherPeer"/>); the channel closing means the dispatcher is gone.
    /// Read on a thread of its own (<see cref="ReceiveConnections"/>), not on the thread pool; the task ends with it.
    /// </summary>
    private static Task ServeDispatcherAsync(IpcChannel dispatcher, WorkerHttpServer server, Serilog.ILogger log) =>
        DedicatedThread.Run("dispatcher channel", () => ReceiveConnections(dispatcher, server, log));

    /// <summary>How long the channel's thread waits in poll(2) before it gives its receive buffer back (see <see cref="ReceiveConnections"/>).</summary>
    internal const int ChannelIdleMs = 1000;

    /// <summary>
    /// The channel's receive loop. While connections arrive it waits for the next one in poll(2) on this thread, and takes
    /// it at once: a hand-off never queues on the thread pool behind the work of the connections already here. On a
    /// flood of stalled readers (docs/floods.md) that queue was hundreds of items deep: the channel, whose socket holds a
    /// few hundred hand-offs, filled, and the dispatcher withheld every connection of the pool — the site's good clients
    /// with the flood — until it drained. After <see cref="ChannelIdleMs"/> without one it gives the receive buffer back
    /// (density) and waits on, still in poll(2): never through the runtime's epoll set, where the channel's socket would
    /// stay registered for reading and writing, and every hand-off would wake the runtime's threads once more for nothing
    /// (<see cref="IpcChannel.FromDescriptor"/>).
    /// </summary>
    private static void ReceiveConnections(IpcChannel dispatcher, WorkerHttpServer server, Serilog.ILogger log)
    {
        var peer = DispatcherPeer.Create((meta, fd) =>
        {
            var handle = new SafeSocketHandle(fd, ownsHandle: true);
            var info = HandedConnectionInfo.From(meta);
            if (!server.TryEnqueue(handle, meta.Initial, info))
                handle.Dispose(); // the server is stopping (it said so, within its connection log budget)

            Interlocked.Increment(ref s_received);
            ArmLoadReports();
        });
        long lost = 0;
        long lastLoss = 0;
        var idle = false;
        while (true)
        {
            // Holding the channel's descriptor while it waits (IpcChannel.PollReadable): the channel may be disposed on
            // another thread (Main ending), and a raw poll of its number could then watch whatever file reuses it.
            var ready = dispatcher.PollReadable(idle ? Timeout.Infinite : ChannelIdleMs);
            if (ready < 0)
                continue;
            if (ready == 0)
            {
                dispatcher.ReleaseReceiveBuffer();
                idle = true;
                continue;
            }

            // Something queued (or the end): taken without waiting, on this thread.
            idle = false;
            if (dispatcher.ReceiveBlocking(Timeout.Infinite) is not { } message)
                return;

            using (message)
            {
                if (message.DescriptorsLost && message.Type == MessageType.Connection)
                {
                    // No descriptor free here (RLIMIT_NOFILE): the kernel closed the connection on the way in. Said once
                    // per episode (one ends after 5 s without a loss); this worker serves what it has meanwhile.
                    Interlocked.Increment(ref s_received);
                    lastLoss = Environment.TickCount64;
                    if (lost++ == 0)
                        log.Warning("Worker {Pid} has no descriptor left (its nofile limit): connections handed to it are lost until one frees up", Environment.ProcessId);
                    continue;
                }

                if (lost > 0 && Environment.TickCount64 - lastLoss > 5000)
                {
                    log.Information("Worker {Pid} takes connections again; {Lost} were lost to its descriptor limit", Environment.ProcessId, lost);
                    lost = 0;
                }

                var dispatched = peer.DispatchAsync(message, PeerPhase.Serving);
                if (!dispatched.IsCompletedSuccessfully)
                    dispatched.AsTask().GetAwaiter().GetResult();
            }
        }
    }
}
