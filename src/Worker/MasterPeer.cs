using Dispatch.Wire;

namespace Dispatch.Worker;

/// <summary>
/// The worker's end of its channel to the master: the table <see cref="Peers.WorkerFromMaster"/> bound to
/// the worker's handlers. Anything the table refuses (an unknown type, a type out of phase — a Stop before
/// the worker is set up, a second WorkerSetup —, a wrong descriptor count, a malformed payload) ends this
/// process.
/// </summary>
internal static class MasterPeer
{
    public static PeerTable Create(Action<WorkerSetup, ReceivedDescriptors> setup, LogFileTable logs, Action<Stop> stop) =>
        new PeerTable(Peers.WorkerFromMaster)
            .On(setup)
            .On<LogFiles>((files, fds) => logs.Apply(errors: false, files.Vhosts, fds))
            .On<ErrorLogFiles>((files, fds) => logs.Apply(errors: true, files.Vhosts, fds))
            .On<Stop>((message, _) => stop(message))
            .Complete();
}
