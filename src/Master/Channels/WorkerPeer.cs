using Dispatch.Protocol.Wire;

namespace Dispatch.Master.Channels;

/// <summary>
/// The master's end of a worker's channel once the worker is ready: the table
/// <see cref="Peers.MasterFromWorker"/>, which is empty — a running worker may send the master nothing,
/// and anything it sends ends it.
/// </summary>
internal static class WorkerPeer
{
    public static PeerTable Create() => new PeerTable(Peers.MasterFromWorker).Complete();
}
