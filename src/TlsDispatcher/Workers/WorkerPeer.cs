using Dispatch.Wire;

namespace Dispatch.TlsDispatcher.Workers;

/// <summary>
/// The dispatcher's end of its channel to a worker: the table <see cref="Peers.DispatcherFromWorker"/>
/// — a worker may only report its load and its traffic per vhost. Anything the table refuses drops the worker (its
/// channel is closed; it finishes and exits, and the master reaps it).
/// </summary>
internal static class WorkerPeer
{
    public static PeerTable Create(Action<WorkerLoad> load, Action<WorkerTraffic> traffic) =>
        new PeerTable(Peers.DispatcherFromWorker)
            .On<WorkerLoad>((report, _) => load(report))
            .On<WorkerTraffic>((report, _) => traffic(report))
            .Complete();
}
