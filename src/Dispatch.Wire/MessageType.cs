namespace Dispatch.Wire;

// The one catalogue of messages between Dispatch's processes (docs/protocol.md is its prose).
//
// Stability rules (read before adding anything):
//  1. A value, once used, is never reused nor renumbered, even after its message is retired.
//  2. A message's layout only grows: new fields are appended at the end, guarded by the header's
//     version byte (IpcChannel.Version); readers reject trailing bytes they do not understand for the
//     version they know. Removing or changing a field is a new version.
//  3. Every message type declares the exact number of descriptors it carries
//     (IWireMessage.DescriptorCount, a constant or a function of the payload). The header declares the
//     count too; sender and receiver both check it against what travels and against the type's exact
//     count, and the receiver closes every received descriptor on any mismatch.
//  4. Each end of each channel accepts a fixed set of types per phase: its table in Peers.cs, bound
//     to its handlers by the process that owns it (the *Peer types of Master, TlsDispatcher, Worker).
//     An unknown type, a type out of phase, a wrong descriptor count or a malformed payload ends the
//     less privileged peer: the master kills a child; a child exits; a dispatcher drops a worker.
//  5. Bounds before bytes: a datagram is at most IpcChannel.MaxDatagram bytes, every string and blob
//     carries its length, checked against the remaining bytes and the field's own limit before any read
//     or allocation. Payloads larger than one datagram travel as a sealed memfd (SealedBlob): the route
//     snapshot (JSON, Routing/SnapshotJson: DispatcherSetup, RouteUpdate), a large pool configuration
//     (JSON, PoolSettings: WorkerSetup), the metrics exposition text (MetricsReply).
//  6. All three executables ship together; a version mismatch at the first message is fatal for the
//     child, and the master refuses to upgrade to binaries of another version.
//
// Besides its channel, each child writes its log to stderr, a stream socket whose lines the master
// reads and re-logs (ChildLogFormatter, StderrPump). Client-chosen strings (Host, URL, SNI) can reach
// root this way, so it is part of the contract and bounded:
//   LVL message[U+001F {"Name": scalar, ...}]\n    LVL: VRB DBG INF WRN ERR FTL (else the whole line, as a warning)
//   - the writer replaces every control character and U+2028/U+2029 in the message with a space;
//   - the reader takes at most 4096 characters per line (drops the rest), parses the JSON with depth 2,
//     keeps at most 16 properties named by 1-40 ASCII letters, digits or '_', with scalar values only
//     (strings of at most 512 characters); anything malformed stays text and is never a property.
//
// Ranges: 1-31 lifecycle (any child <-> master), 32-63 master <-> dispatcher,
// 64-95 master <-> worker, 96-127 dispatcher <-> worker.
public enum MessageType : ushort
{
    /// <summary>child → master, first message after the jailed exec: role, pid.</summary>
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

    /// <summary>worker → dispatcher: its requests, bytes sent and request durations per vhost so far (cumulative).</summary>
    WorkerTraffic = 98,
}

/// <summary>Process roles; the values travel in <see cref="MessageType.Hello"/> and <see cref="MessageType.JailSpec"/>.</summary>
public enum ProcessRole : byte
{
    Dispatcher = 1,
    Worker = 2,
}
