using Dispatch.Protocol.Wire;

namespace Dispatch.Master.Channels;

/// <summary>
/// The master's end of a dispatcher's channel once the dispatcher is ready: the table
/// <see cref="Peers.MasterFromDispatcher"/> bound to the master's handlers. Anything the table refuses
/// ends the dispatcher (the master kills it and starts another on the same sockets).
/// </summary>
internal static class DispatcherPeer
{
    public static PeerTable Create(Action<NeedWorker> needWorker, Action<DispatcherStats> stats, Action<MetricsRequest> metrics, Action<WorkerGone> gaveUp) =>
        new PeerTable(Peers.MasterFromDispatcher)
            .On<NeedWorker>((request, _) => needWorker(request))
            .On<WorkerGone>((gone, _) => gaveUp(gone))
            .On<DispatcherStats>((answer, _) => stats(answer))
            .On<MetricsRequest>((request, _) => metrics(request))
            .Complete();
}
