using System.Net.Sockets;
using Dispatch.Master.Children;
using Dispatch.Wire;
using Serilog;

namespace Dispatch.Master.Channels;

/// <summary>
/// The master's end of a worker's channel once the worker is ready: the table
/// <see cref="Peers.MasterFromWorker"/>, which is empty — a running worker may send the master nothing,
/// and anything it sends ends it.
/// </summary>
internal static class WorkerPeer
{
    public static PeerTable Create() => new PeerTable(Peers.MasterFromWorker).Complete();

    /// <summary>Watches a running worker's channel until it closes; a worker that sends anything is killed.</summary>
    public static async Task WatchAsync(ChildProcess worker, ILogger log, CancellationToken stop)
    {
        var peer = Create();
        try
        {
            using var message = await worker.Channel.ReceiveAsync(stop).ConfigureAwait(false);
            if (message is not null)
                await peer.DispatchAsync(message, PeerPhase.Serving).ConfigureAwait(false);
        }
        catch (WireException e)
        {
            log.Error("Worker {Pid} of pool {Pool} broke the protocol, terminating it: {Reason}", worker.Pid, worker.Name, e.Message);
            worker.Kill();
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception e) when (e is ObjectDisposedException or SocketException { SocketErrorCode: SocketError.OperationAborted })
        {
            // The channel was closed here while the receive waited: the worker exited and was collected.
        }
    }
}
