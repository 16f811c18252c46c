namespace Dispatch.Protocol.Wire;

// The one catalogue of messages between Dispatch's processes.
//
// Stability rules (read before adding anything):
//  1. A value, once used, is never reused nor renumbered, even after its message is retired.
//  2. A message's layout only grows: new fields are appended at the end, guarded by the header's
//     version byte; readers reject trailing bytes they do not understand for the version they know.
//  3. Every message declares, in its header, how many descriptors travel with it; the receiver
//     checks the declared count against what arrived, and against what the type allows, and closes
//     every received descriptor on any mismatch.
//  4. Each side of each channel accepts a fixed set of types per phase (see the dispatch tables in
//     Master/TlsDispatcher/Worker). A less privileged peer that sends an unknown or out-of-phase
//     type loses its channel (and is terminated); the more privileged side never trusts it again.
//  5. Bounds before bytes: a datagram is at most MaxDatagram bytes, every string and blob carries
//     its length, checked against the remaining bytes and the field's own limit before any read or
//     allocation. Payloads larger than one datagram (route snapshots) travel as a sealed memfd.
//  6. All three executables ship together; a version mismatch at Hello is fatal for the child.
//
// Ranges: 1-31 lifecycle (any child <-> master), 32-63 master <-> dispatcher,
// 64-95 master <-> worker, 96-127 dispatcher <-> worker.
public enum MessageType : ushort
{
    /// <summary>child → master, first message after the jailed exec: role, pid, protocol version.</summary>
    Hello = 1,

    /// <summary>master → child in stage 1 (still root): the identity and jail to apply before exec.</summary>
    JailSpec = 2,

    /// <summary>child → master: results of the post-exec jail self-check (denied paths, regain attempts).</summary>
    JailProof = 3,

    /// <summary>child → master: set up and serving.</summary>
    Ready = 4,

    /// <summary>master → child: stop accepting, finish within the grace period, exit.</summary>
    Stop = 5,

    /// <summary>master → dispatcher: listening sockets (n descriptors) and the route snapshot (memfd, last descriptor).</summary>
    DispatcherSetup = 32,

    /// <summary>dispatcher → master: a worker of pool P is needed (by pool name, never by uid).</summary>
    NeedWorker = 33,

    /// <summary>master → dispatcher: a worker of pool P is ready; its channel travels as one descriptor.</summary>
    WorkerReady = 34,

    /// <summary>master → dispatcher: no worker for pool P (limits, unknown pool, spawn failure), with the reason.</summary>
    WorkerRefused = 35,

    /// <summary>master → dispatcher: worker W has exited.</summary>
    WorkerGone = 36,

    /// <summary>master → dispatcher: a new route snapshot (memfd) after a reload, and the pools whose workers must be let go.</summary>
    RouteUpdate = 37,

    /// <summary>master → dispatcher: report your counters and workers (for status and metrics).</summary>
    StatsRequest = 38,

    /// <summary>dispatcher → master: the answer to a StatsRequest: named counters and, per worker, its open connections.</summary>
    DispatcherStats = 39,

    /// <summary>dispatcher → master: a scrape arrived on the metrics listener; send the exposition text.</summary>
    MetricsRequest = 40,

    /// <summary>master → dispatcher: the Prometheus exposition text (sealed memfd) for a MetricsRequest.</summary>
    MetricsReply = 41,

    /// <summary>master → worker: the pool's configuration; the channel to the dispatcher travels as one descriptor.</summary>
    WorkerSetup = 64,

    /// <summary>master → worker: the vhosts' access logs, opened by the master (one descriptor each); again after a reopen (SIGUSR1).</summary>
    LogFiles = 65,

    /// <summary>master → worker: the vhosts' error logs, opened by the master (one descriptor each); again after a reopen (SIGUSR1).</summary>
    ErrorLogFiles = 66,

    /// <summary>dispatcher → worker: a client connection (one descriptor) and its metadata and bytes already read.</summary>
    Connection = 96,

    /// <summary>worker → dispatcher: connections currently open.</summary>
    WorkerLoad = 97,
}

/// <summary>Process roles; the values travel in <see cref="MessageType.Hello"/> and <see cref="MessageType.JailSpec"/>.</summary>
public enum ProcessRole : byte
{
    Dispatcher = 1,
    Worker = 2,
}
