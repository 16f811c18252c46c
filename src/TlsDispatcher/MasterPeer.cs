using Dispatch.Wire;

namespace Dispatch.TlsDispatcher;

/// <summary>
/// The dispatcher's end of its channel to the master: the table <see cref="Peers.DispatcherFromMaster"/>
/// bound to the dispatcher's handlers, each given the descriptors its type carries. Anything the table
/// refuses (an unknown type, a type out of phase, a wrong descriptor count, a malformed payload) ends
/// this process: it never trusts its master less than itself.
/// </summary>
internal static class MasterPeer
{
    public static PeerTable Create(
        Action<DispatcherSetup, ReceivedDescriptors> setup,
        Action<WorkerReady, int> workerReady,
        Action<WorkerRefused> workerRefused,
        Action<WorkerGone> workerGone,
        Action<RouteUpdate, int> routeUpdate,
        Action<StatsRequest> statsRequest,
        Action<MetricsReply, int> metricsReply,
        Action<Stop> stop) =>
        new PeerTable(Peers.DispatcherFromMaster)
            .On(setup)
            .On<WorkerReady>((ready, fds) => workerReady(ready, fds.Take(0)))
            .On<WorkerRefused>((refused, _) => workerRefused(refused))
            .On<WorkerGone>((gone, _) => workerGone(gone))
            .On<RouteUpdate>((update, fds) => routeUpdate(update, fds.Take(0)))
            .On<StatsRequest>((request, _) => statsRequest(request))
            .On<MetricsReply>((reply, fds) => metricsReply(reply, reply.Ok ? fds.Take(0) : -1))
            .On<Stop>((message, _) => stop(message))
            .Complete();
}
