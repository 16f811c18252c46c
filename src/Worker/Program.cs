using System.Net;
using System.Net.Sockets;
using Dispatch.Protocol.Hosting;
using Dispatch.Protocol.Interop;
using Dispatch.Protocol.Routing;
using Dispatch.Protocol.Wire;
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
        var log = ChildBootstrap.CreateLogger(LogEventLevel.Information);
        using var stopping = new CancellationTokenSource();
        IpcChannel? dispatcher = null;
        try
        {
            WorkerSetup setup;
            using (var message = await master.ReceiveAsync().ConfigureAwait(false) ?? throw new WireException("master closed the channel during setup"))
            {
                setup = message.Decode<WorkerSetup>();
                if (message.Descriptors.Count != 1)
                    throw new WireException("WorkerSetup without the dispatcher's channel");
                dispatcher = IpcChannel.FromDescriptor(message.Descriptors.Take(0), "dispatcher");
            }

            var pool = SnapshotJson.ParsePool(setup.PoolJson);
            master.Send(JailProbe.Run(setup.ProbePaths, setup.ProbeThreads));

            var vhosts = pool.Vhosts.Select(v => new VhostSettings(v.Name, v.Aliases, v.Root, v.DirectoryListing, v.Index)).ToList();
            await using var server = await WorkerHttpServer.StartAsync(vhosts, log, stopping.Token).ConfigureAwait(false);
            master.Send(new Ready($"pool {pool.Name}: {vhosts.Count} vhosts"));
            log.Information("Worker {Pid} of pool {Pool} serving {Vhosts}", Environment.ProcessId, pool.Name, string.Join(", ", vhosts.Select(v => v.Name)));

            var fromDispatcher = ServeDispatcherAsync(dispatcher, server, log);
            var fromMaster = master.ReceiveAsync().AsTask();
            var first = await Task.WhenAny(fromDispatcher, fromMaster).ConfigureAwait(false);
            if (first == fromMaster)
            {
                using var message = await fromMaster.ConfigureAwait(false);
                if (message is null)
                    return 0; // The master is gone: so are we.
                var stop = message.Decode<Stop>();
                await server.StopAsync(TimeSpan.FromMilliseconds(stop.GraceMs)).ConfigureAwait(false);
                return 0;
            }

            await fromDispatcher.ConfigureAwait(false);
            return 0;
        }
        catch (Exception e) when (e is WireException or SysCallException or System.Text.Json.JsonException or InvalidOperationException)
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

    /// <summary>Connections from the dispatcher; the channel closing means the dispatcher is gone.</summary>
    private static async Task ServeDispatcherAsync(IpcChannel dispatcher, WorkerHttpServer server, Serilog.ILogger log)
    {
        while (await dispatcher.ReceiveAsync().ConfigureAwait(false) is { } message)
        {
            using (message)
            {
                var meta = message.Decode<Connection>();
                if (message.Descriptors.Count != 1)
                    throw new WireException("Connection without its socket");
                var socket = new Socket(new SafeSocketHandle(message.Descriptors.Take(0), ownsHandle: true));
                var info = new HandedConnectionInfo(
                    (long)meta.ConnectionId,
                    IPEndPoint.TryParse(meta.Client, out var client) ? client : null,
                    IPEndPoint.TryParse(meta.Local, out var local) ? local : null,
                    meta.Sni,
                    meta.TlsProtocol,
                    meta.TlsCipher,
                    meta.Protocol == AppProtocol.Http2 ? HandedProtocol.Http2 : HandedProtocol.Http1);
                if (!server.TryEnqueue(socket, meta.Initial, info))
                {
                    log.Warning("Connection {ConnectionId} refused: the server is stopping", meta.ConnectionId);
                    socket.Dispose();
                }
            }
        }
    }
}
