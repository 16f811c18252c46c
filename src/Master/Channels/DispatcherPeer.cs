using Dispatch.Master.Children;
using Dispatch.Wire;
using Serilog;

namespace Dispatch.Master.Channels;

/// <summary>
/// The master's end of a dispatcher's channel once the dispatcher is ready: the table
/// <see cref="Peers.MasterFromDispatcher"/> bound to the master's handlers. Anything the table refuses
/// ends the dispatcher (the master kills it and starts another on the same sockets).
/// </summary>
internal static class DispatcherPeer
{
    public static PeerTable Create(Action<NeedWorker> needWorker, Action<DispatcherStats, VhostTraffic[]> stats, Action<MetricsRequest> metrics, Action<WorkerGone> gaveUp) =>
        new PeerTable(Peers.MasterFromDispatcher)
            .On<NeedWorker>((request, _) => needWorker(request))
            .On<WorkerGone>((gone, _) => gaveUp(gone))
            .On<DispatcherStats>((answer, fds) => stats(answer, answer.Traffic ? ReadTraffic(fds.Take(0)) : []))
            .On<MetricsRequest>((request, _) => metrics(request))
            .Complete();

    /// <summary>
    /// The vhosts' traffic a DispatcherStats carries (a sealed memfd, <see cref="VhostTraffic.DecodeTable"/>); a blob
    /// that is not sealed, too large or malformed is a <see cref="WireException"/> (the dispatcher is ended).
    /// </summary>
    internal static VhostTraffic[] ReadTraffic(int memfd)
    {
        try
        {
            return VhostTraffic.DecodeTable(SealedBlob.Read(memfd, VhostTraffic.MaxTableSize));
        }
        finally
        {
            Dispatch.Wire.Interop.WireLibc.Close(memfd);
        }
    }

    /// <summary>
    /// Serves the dispatcher's channel through <paramref name="peer"/> until it closes, or the dispatcher sends what
    /// the table refuses (then the caller ends it). A draining dispatcher (<paramref name="draining"/>) is held to the
    /// table's Draining phase.
    /// </summary>
    public static async Task ServeAsync(ChildProcess dispatcher, PeerTable peer, Func<bool> draining, ILogger log, CancellationToken stop)
    {
        while (true)
        {
            IpcMessage? message;
            try
            {
                message = await dispatcher.Channel.ReceiveAsync(stop).ConfigureAwait(false);
            }
            catch (WireException e)
            {
                log.Error("Dispatcher {Pid} sent a malformed message, terminating it: {Reason}", dispatcher.Pid, e.Message);
                return;
            }

            var retiring = draining();
            if (message is null)
            {
                if (!stop.IsCancellationRequested && !retiring)
                    log.Error("Dispatcher {Pid} closed its channel", dispatcher.Pid);
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
                    log.Error("Dispatcher {Pid} broke the protocol, terminating it: {Reason}", dispatcher.Pid, e.Message);
                    return;
                }
            }
        }
    }
}
