using Dispatch.Wire;

namespace Dispatch.Worker;

/// <summary>
/// The worker's end of its channel to the dispatcher: the table <see cref="Peers.WorkerFromDispatcher"/>
/// — connections only, each with exactly its one socket. Anything the table refuses ends this process.
/// </summary>
internal static class DispatcherPeer
{
    public static PeerTable Create(Action<Connection, int> connection) =>
        new PeerTable(Peers.WorkerFromDispatcher)
            .On<Connection>((meta, fds) => connection(meta, fds.Take(0)))
            .Complete();
}
