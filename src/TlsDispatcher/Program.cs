using System.Net.Sockets;
using Dispatch.Protocol.Hosting;
using Dispatch.Protocol.Interop;
using Dispatch.Protocol.Routing;
using Dispatch.Protocol.Wire;
using Dispatch.TlsDispatcher.Http;
using Dispatch.TlsDispatcher.Net;
using Dispatch.TlsDispatcher.Tls;
using Dispatch.TlsDispatcher.Workers;
using Serilog.Events;

namespace Dispatch.TlsDispatcher;

/// <summary>
/// The dispatcher: unprivileged, jailed, no files. Started by the master; receives its listening
/// sockets and the route snapshot, proves its jail, then routes connections to workers.
/// </summary>
internal static class Program
{
    private const int MaxSnapshotBytes = 64 << 20;

    private static async Task<int> Main(string[] args)
    {
        var master = ChildBootstrap.Start(ProcessRole.Dispatcher, args);
        var log = ChildBootstrap.CreateLogger();
        using var stopping = new CancellationTokenSource();
        try
        {
            // Setup phase: exactly one DispatcherSetup.
            DispatcherSetup setup;
            RouteTable routes;
            var listeners = new List<Socket>();
            using (var message = await master.ReceiveAsync().ConfigureAwait(false) ?? throw new WireException("master closed the channel during setup"))
            {
                setup = message.Decode<DispatcherSetup>();
                if (message.Descriptors.Count != setup.Listeners.Length + 1)
                    throw new WireException($"setup declares {setup.Listeners.Length} listeners but carries {message.Descriptors.Count} descriptors");
                for (var i = 0; i < setup.Listeners.Length; i++)
                    listeners.Add(new Socket(new SafeSocketHandle(message.Descriptors.Take(i), ownsHandle: true)));
                var memfd = message.Descriptors.Take(setup.Listeners.Length);
                try
                {
                    routes = new RouteTable(SnapshotJson.ParseSnapshot(SealedBlob.Read(memfd, MaxSnapshotBytes)), log);
                }
                finally
                {
                    Libc.Close(memfd);
                }
            }

            master.Send(JailProbe.Run(setup.ProbePaths, setup.ProbeThreads));

            using var workers = new WorkerPools(master, () => routes, log);
            using var poller = new ReadinessPoller();
            // Ready before the first accept: a client already waiting could otherwise make this process ask
            // for a worker before the master has seen it ready.
            master.Send(new Ready($"{listeners.Count} listeners, {routes.Count} names"));
            log.Information("Dispatcher {Pid} serving {Listeners} with {Names} host names", Environment.ProcessId, string.Join(", ", setup.Listeners.Select(l => $"{l.Protocol} {l.Endpoint}")), routes.Count);
            var frontends = new List<Frontend>();
            var loops = new List<Task>();
            for (var i = 0; i < listeners.Count; i++)
            {
                var info = setup.Listeners[i];
                Frontend frontend = info.Protocol switch
                {
                    "http" => new PlainHttpFrontend(listeners[i], info.Endpoint, new TrustedProxies(info.TrustedProxies), () => routes, workers, poller, log),
                    "tls" => new TlsTerminationFrontend(listeners[i], info.Endpoint, new TrustedProxies(info.TrustedProxies), () => routes, workers, poller, log),
                    _ => throw new WireException($"listener protocol '{info.Protocol}' is not supported"),
                };
                frontends.Add(frontend);
                loops.Add(frontend.RunAsync(stopping.Token));
            }


            // Running phase: WorkerReady, WorkerRefused, WorkerGone, Stop. Anything else is fatal.
            while (await master.ReceiveAsync().ConfigureAwait(false) is { } message)
            {
                using (message)
                {
                    switch (message.Type)
                    {
                        case MessageType.WorkerReady:
                            var ready = message.Decode<WorkerReady>();
                            if (message.Descriptors.Count != 1)
                                throw new WireException("WorkerReady without its channel");
                            workers.OnWorkerReady(ready, message.Descriptors.Take(0));
                            break;
                        case MessageType.WorkerRefused:
                            workers.OnRefused(message.Decode<WorkerRefused>());
                            break;
                        case MessageType.WorkerGone:
                            workers.OnGone(message.Decode<WorkerGone>());
                            break;
                        case MessageType.RouteUpdate:
                            var update = message.Decode<RouteUpdate>();
                            if (message.Descriptors.Count != 1)
                                throw new WireException("RouteUpdate without its snapshot");
                            var snapshotFd = message.Descriptors.Take(0);
                            try
                            {
                                // New connections see the new table; open ones keep the one they started with.
                                routes = new RouteTable(SnapshotJson.ParseSnapshot(SealedBlob.Read(snapshotFd, MaxSnapshotBytes)), log);
                            }
                            finally
                            {
                                Libc.Close(snapshotFd);
                            }

                            workers.Retire(update.RetiredPools);
                            log.Information("Routes updated to version {Version}: {Names} host names; retired the workers of {Pools}", routes.Version, routes.Count, update.RetiredPools.Length == 0 ? "no pool" : string.Join(", ", update.RetiredPools));
                            break;
                        case MessageType.Stop:
                            var stop = message.Decode<Stop>();
                            log.Information("Stopping: no new connections, {Grace} ms for those in flight", stop.GraceMs);
                            stopping.Cancel();
                            foreach (var l in listeners)
                                l.Dispose();
                            var deadline = Environment.TickCount64 + stop.GraceMs;
                            while (frontends.Sum(f => f.InFlight) > 0 && Environment.TickCount64 < deadline)
                                await Task.Delay(20).ConfigureAwait(false);
                            return 0;
                        default:
                            throw new WireException($"the master may not send {message.Type} now");
                    }
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
