namespace Dispatch.Wire;

/// <summary>
/// The table of every channel end: which message types it accepts in which phase. Each process binds
/// its handlers to its ends' tables (<see cref="PeerTable"/>), and the channel refuses everything else:
/// a type not in the table, a type out of its phase, a count of descriptors other than the type's exact
/// count, a malformed payload. Such a refusal ends the less privileged peer (docs/protocol.md).
/// </summary>
public static class Peers
{
    private static readonly PeerPhase[] Setup = [PeerPhase.Setup];
    private static readonly PeerPhase[] Serving = [PeerPhase.Serving];
    private static readonly PeerPhase[] Running = [PeerPhase.Serving, PeerPhase.Draining];
    private static readonly PeerPhase[] SetupAndServing = [PeerPhase.Setup, PeerPhase.Serving];

    /// <summary>The master's end of a child's channel while the child starts (the master's ChildLauncher): Hello, JailProof, Ready, in that order.</summary>
    public static readonly PeerSpec MasterFromStartingChild = new("master, from a starting child", "the child",
    [
        new(MessageType.Hello, Setup),
        new(MessageType.JailProof, Setup),
        new(MessageType.Ready, Setup),
    ]);

    /// <summary>
    /// The master's end of a dispatcher's channel after it is ready: it may ask for workers, answer for stats, ask for
    /// metrics, and say it gave up one of its own workers (WorkerGone: it stopped reading its channel; the master kills it).
    /// </summary>
    public static readonly PeerSpec MasterFromDispatcher = new("master, from a dispatcher", "the dispatcher",
    [
        new(MessageType.NeedWorker, Running),
        new(MessageType.WorkerGone, Running),
        new(MessageType.DispatcherStats, Running),
        new(MessageType.MetricsRequest, Running),
    ]);

    /// <summary>The master's end of a worker's channel after it is ready: a running worker may send the master nothing.</summary>
    public static readonly PeerSpec MasterFromWorker = new("master, from a worker", "the worker", []);

    /// <summary>The dispatcher's end of its channel to the master.</summary>
    public static readonly PeerSpec DispatcherFromMaster = new("dispatcher, from the master", "the master",
    [
        new(MessageType.DispatcherSetup, Setup),
        new(MessageType.WorkerReady, Running),
        new(MessageType.WorkerRefused, Running),
        new(MessageType.WorkerGone, Running),
        new(MessageType.RouteUpdate, Running),
        new(MessageType.StatsRequest, Running),
        new(MessageType.MetricsReply, Running),
        new(MessageType.Stop, Running),
    ]);

    /// <summary>
    /// The dispatcher's end of its channel to a worker: a worker may only report its load and its traffic per vhost,
    /// and once let go (Draining: the dispatcher half-closed the channel) its traffic until it exits.
    /// </summary>
    public static readonly PeerSpec DispatcherFromWorker = new("dispatcher, from a worker", "the worker",
    [
        new(MessageType.WorkerLoad, Running),
        new(MessageType.WorkerTraffic, Running),
    ]);

    /// <summary>The worker's end of its channel to the master.</summary>
    public static readonly PeerSpec WorkerFromMaster = new("worker, from the master", "the master",
    [
        new(MessageType.WorkerSetup, Setup),
        new(MessageType.LogFiles, SetupAndServing),
        new(MessageType.ErrorLogFiles, SetupAndServing),
        new(MessageType.Stop, Serving),
    ]);

    /// <summary>The worker's end of its channel to the dispatcher: connections only.</summary>
    public static readonly PeerSpec WorkerFromDispatcher = new("worker, from the dispatcher", "the dispatcher",
    [
        new(MessageType.Connection, Serving),
    ]);

    /// <summary>Every channel end, for the tests and the docs.</summary>
    public static IReadOnlyList<PeerSpec> All { get; } =
        [MasterFromStartingChild, MasterFromDispatcher, MasterFromWorker, DispatcherFromMaster, DispatcherFromWorker, WorkerFromMaster, WorkerFromDispatcher];
}
