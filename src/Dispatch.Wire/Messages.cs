namespace Dispatch.Wire;

// Wire layouts, one record per MessageType, each with its encoder and decoder side by side.
// Limits: names and paths 4096 bytes, lists 1024 entries unless stated.

internal static class Limits
{
    public const int Name = 255;
    public const int Path = 4096;
    public const int Text = 8192;
    public const int List = 1024;
}

/// <summary>u8 role | i32 pid (the protocol version is the header's)</summary>
public sealed record Hello(ProcessRole Role, int Pid) : IWireMessage<Hello>
{
    public static MessageType Type => MessageType.Hello;

    public static int DescriptorCount(Hello message) => 0;

    public void Encode(ref WireWriter writer)
    {
        writer.U8((byte)Role);
        writer.I32(Pid);
    }

    public static Hello Decode(ref WireReader reader)
    {
        var role = reader.U8();
        if (role is not ((byte)ProcessRole.Dispatcher or (byte)ProcessRole.Worker))
            throw new WireException($"unknown role {role}");
        return new Hello((ProcessRole)role, reader.I32());
    }
}

/// <summary>One resource limit: u8 resource | u64 soft | u64 hard.</summary>
public readonly record struct ResourceLimit(byte Resource, ulong Soft, ulong Hard);

/// <summary>A third-party privilege module to apply in stage 1: its shared library, its name in the config and the pool's settings (JSON).</summary>
public readonly record struct ModuleSpec(string Library, string Name, string SettingsJson);

/// <summary>
/// u8 role | u32 uid | u32 gid | u32-list groups | string-list readPaths | string-list execPaths |
/// string-list writePaths | u16 n, n × ResourceLimit | string name (for logs) |
/// u16 m, m × (string assembly | string type | string settings) | u16 k, k × u16 TCP ports the process may connect to |
/// string program (empty: the role's own binary; else the pool's worker program, exec'd in its place) |
/// string-list cgroupProcs (at most 8: the <c>cgroup.procs</c> files of the pool's cgroups, one per hierarchy,
/// which stage 1 joins first; empty: no cgroup)
/// string-list tenant write paths (the pool's landlock.write: directories the jail checks are owned by uid before granting write)
/// bool chroot [u64 tmp bytes | string-list read-only binds | string-list writable binds] | bool landlock
/// </summary>
public sealed record JailSpec(
    ProcessRole Role,
    uint Uid,
    uint Gid,
    uint[] Groups,
    string[] ReadPaths,
    string[] ExecPaths,
    string[] WritePaths,
    ResourceLimit[] Limits,
    string Name,
    ModuleSpec[] Modules,
    ushort[] ConnectPorts,
    string Program = "",
    string[]? CgroupProcs = null,
    string[]? TenantWritePaths = null,
    ChrootSpec? Chroot = null,
    bool Landlock = true) : IWireMessage<JailSpec>
{
    public static MessageType Type => MessageType.JailSpec;

    public static int DescriptorCount(JailSpec message) => 0;

    public void Encode(ref WireWriter writer)
    {
        writer.U8((byte)Role);
        writer.U32(Uid);
        writer.U32(Gid);
        writer.U16((ushort)Groups.Length);
        foreach (var g in Groups)
            writer.U32(g);
        writer.StringList(ReadPaths);
        writer.StringList(ExecPaths);
        writer.StringList(WritePaths);
        writer.U16((ushort)Limits.Length);
        foreach (var l in Limits)
        {
            writer.U8(l.Resource);
            writer.I64((long)l.Soft);
            writer.I64((long)l.Hard);
        }

        writer.String(Name);
        writer.U16((ushort)Modules.Length);
        foreach (var m in Modules)
        {
            writer.String(m.Library);
            writer.String(m.Name);
            writer.String(m.SettingsJson);
        }

        writer.U16((ushort)ConnectPorts.Length);
        foreach (var p in ConnectPorts)
            writer.U16(p);
        writer.String(Program);
        writer.StringList(CgroupProcs ?? []);
        writer.StringList(TenantWritePaths ?? []);
        writer.Bool(Chroot is not null);
        if (Chroot is not null)
        {
            writer.I64((long)Chroot.TmpBytes);
            writer.StringList(Chroot.ReadOnly);
            writer.StringList(Chroot.Writable);
        }

        writer.Bool(Landlock);
    }

    public static JailSpec Decode(ref WireReader reader)
    {
        var role = (ProcessRole)reader.U8();
        var uid = reader.U32();
        var gid = reader.U32();
        int groupCount = reader.U16();
        if (groupCount > 64)
            throw new WireException($"{groupCount} supplementary groups exceed the limit of 64");
        var groups = new uint[groupCount];
        for (var i = 0; i < groupCount; i++)
            groups[i] = reader.U32();
        var read = reader.StringList(Wire.Limits.List, Wire.Limits.Path);
        var exec = reader.StringList(Wire.Limits.List, Wire.Limits.Path);
        var write = reader.StringList(Wire.Limits.List, Wire.Limits.Path);
        int limitCount = reader.U16();
        if (limitCount > 16)
            throw new WireException($"{limitCount} resource limits exceed the limit of 16");
        var limits = new ResourceLimit[limitCount];
        for (var i = 0; i < limitCount; i++)
            limits[i] = new ResourceLimit(reader.U8(), (ulong)reader.I64(), (ulong)reader.I64());
        var name = reader.String(Wire.Limits.Name);
        int moduleCount = reader.U16();
        if (moduleCount > 32)
            throw new WireException($"{moduleCount} modules exceed the limit of 32");
        var modules = new ModuleSpec[moduleCount];
        for (var i = 0; i < moduleCount; i++)
            modules[i] = new ModuleSpec(reader.String(Wire.Limits.Path), reader.String(Wire.Limits.Name), reader.String(Wire.Limits.Text));
        int portCount = reader.U16();
        if (portCount > 64)
            throw new WireException($"{portCount} ports exceed the limit of 64");
        var ports = new ushort[portCount];
        for (var i = 0; i < portCount; i++)
            ports[i] = reader.U16();
        var program = reader.String(Wire.Limits.Path);
        var cgroupProcs = reader.StringList(8, Wire.Limits.Path);
        var tenantWrite = reader.StringList(64, Wire.Limits.Path);
        ChrootSpec? chroot = null;
        if (reader.Bool())
        {
            var tmp = reader.I64();
            if (tmp <= 0)
                throw new WireException($"chroot /tmp size {tmp} is not positive");
            chroot = new ChrootSpec((ulong)tmp, reader.StringList(Wire.Limits.List, Wire.Limits.Path), reader.StringList(Wire.Limits.List, Wire.Limits.Path));
        }

        return new JailSpec(role, uid, gid, groups, read, exec, write, limits, name, modules, ports, program, cgroupProcs, tenantWrite, chroot, reader.Bool());
    }
}

/// <summary>
/// A private mount namespace whose root is a fresh tmpfs holding only the runtime, the system
/// libraries and programs, a minimal /etc, /dev and /proc, a private /tmp of <paramref name="TmpBytes"/>,
/// and these paths bound at their own place (see <c>Dispatch.Platform.Confinement.Chroot</c>).
/// </summary>
public sealed record ChrootSpec(ulong TmpBytes, string[] ReadOnly, string[] Writable);

/// <summary>One probe of the jail: a path the process must not be able to open.</summary>
public readonly record struct ProbeResult(string Path, int ThreadsTried, int ThreadsOpened, string ChildOutcome, bool ChildOpened);

/// <summary>
/// u32 uid | u32 gid | bool regainRootRefused | bool noNewPrivs | u16 n, n × (string path | i32 tried |
/// i32 opened | string childOutcome | bool childOpened) | optionally: u16 n, n × i32 errno of lstat(path)
/// for each probe in order (0: the path exists in the process's view; 2 ENOENT: it does not). The
/// last part may be absent (worker programs written before it); the master then knows nothing of
/// existence, which a chroot pool does not accept.
/// </summary>
public sealed record JailProof(uint Uid, uint Gid, bool RegainRootRefused, bool NoNewPrivs, ProbeResult[] Probes, int[]? LStatErrors = null) : IWireMessage<JailProof>
{
    public static MessageType Type => MessageType.JailProof;

    public static int DescriptorCount(JailProof message) => 0;

    /// <summary>True when every probe was denied on every thread and in the child, and root could not be regained.</summary>
    public bool Holds => RegainRootRefused && NoNewPrivs && Array.TrueForAll(Probes, p => p.ThreadsOpened == 0 && !p.ChildOpened);

    public void Encode(ref WireWriter writer)
    {
        writer.U32(Uid);
        writer.U32(Gid);
        writer.Bool(RegainRootRefused);
        writer.Bool(NoNewPrivs);
        writer.U16((ushort)Probes.Length);
        foreach (var p in Probes)
        {
            writer.String(p.Path);
            writer.I32(p.ThreadsTried);
            writer.I32(p.ThreadsOpened);
            writer.String(p.ChildOutcome);
            writer.Bool(p.ChildOpened);
        }

        if (LStatErrors is not null)
        {
            writer.U16((ushort)LStatErrors.Length);
            foreach (var e in LStatErrors)
                writer.I32(e);
        }
    }

    public static JailProof Decode(ref WireReader reader)
    {
        var uid = reader.U32();
        var gid = reader.U32();
        var regain = reader.Bool();
        var nnp = reader.Bool();
        int count = reader.U16();
        if (count > 64)
            throw new WireException($"{count} probes exceed the limit of 64");
        var probes = new ProbeResult[count];
        for (var i = 0; i < count; i++)
            probes[i] = new ProbeResult(reader.String(Limits.Path), reader.I32(), reader.I32(), reader.String(Limits.Text), reader.Bool());
        if (reader.Remaining == 0)
            return new JailProof(uid, gid, regain, nnp, probes);
        int errorCount = reader.U16();
        if (errorCount != count)
            throw new WireException($"{errorCount} lstat results for {count} probes");
        var errors = new int[errorCount];
        for (var i = 0; i < errorCount; i++)
            errors[i] = reader.I32();
        return new JailProof(uid, gid, regain, nnp, probes, errors);
    }
}

/// <summary>string detail</summary>
public sealed record Ready(string Detail) : IWireMessage<Ready>
{
    public static MessageType Type => MessageType.Ready;

    public static int DescriptorCount(Ready message) => 0;

    public void Encode(ref WireWriter writer) => writer.String(Detail);

    public static Ready Decode(ref WireReader reader) => new(reader.String(Limits.Text));
}

/// <summary>
/// u32 grace milliseconds | bool final: the master is exiting, so no worker will be started any more (a
/// dispatcher fails the connections still waiting for one at once); false for an upgrade, where the
/// draining dispatcher may still be given workers.
/// </summary>
public sealed record Stop(uint GraceMs, bool Final = true) : IWireMessage<Stop>
{
    public static MessageType Type => MessageType.Stop;

    public static int DescriptorCount(Stop message) => 0;

    public void Encode(ref WireWriter writer)
    {
        writer.U32(GraceMs);
        writer.Bool(Final);
    }

    public static Stop Decode(ref WireReader reader) => new(reader.U32(), reader.Bool());
}

/// <summary>
/// u16 n, n × (string protocol | string endpoint | string-list trusted proxies) | string-list probe paths | i32 probe threads.
/// Descriptors: the n listening sockets in order, then the route snapshot (sealed memfd).
/// </summary>
public sealed record DispatcherSetup(ListenerInfo[] Listeners, string[] ProbePaths, int ProbeThreads) : IWireMessage<DispatcherSetup>
{
    public static MessageType Type => MessageType.DispatcherSetup;

    public static int DescriptorCount(DispatcherSetup message) => message.Listeners.Length + 1;

    public void Encode(ref WireWriter writer)
    {
        writer.U16((ushort)Listeners.Length);
        foreach (var l in Listeners)
        {
            writer.String(l.Protocol);
            writer.String(l.Endpoint);
            writer.StringList(l.TrustedProxies);
        }

        writer.StringList(ProbePaths);
        writer.I32(ProbeThreads);
    }

    public static DispatcherSetup Decode(ref WireReader reader)
    {
        int count = reader.U16();
        if (count >= IpcChannel.MaxDescriptors)
            throw new WireException($"{count} listeners exceed the limit of {IpcChannel.MaxDescriptors - 1}");
        var listeners = new ListenerInfo[count];
        for (var i = 0; i < count; i++)
            listeners[i] = new ListenerInfo(reader.String(Limits.Name), reader.String(Limits.Name), reader.StringList(256, 64));
        var probes = reader.StringList(64, Limits.Path);
        var threads = reader.I32();
        if (threads is < 1 or > 256)
            throw new WireException($"probe thread count {threads} outside 1..256");
        return new DispatcherSetup(listeners, probes, threads);
    }
}

/// <param name="TrustedProxies">Addresses or CIDR blocks whose connections open with a PROXY header; empty: none.</param>
public sealed record ListenerInfo(string Protocol, string Endpoint, string[] TrustedProxies);

/// <summary>string-list pools to retire. Descriptor: the new route snapshot (sealed memfd).</summary>
public sealed record RouteUpdate(string[] RetiredPools) : IWireMessage<RouteUpdate>
{
    public static MessageType Type => MessageType.RouteUpdate;

    public static int DescriptorCount(RouteUpdate message) => 1;

    public void Encode(ref WireWriter writer) => writer.StringList(RetiredPools);

    public static RouteUpdate Decode(ref WireReader reader) => new(reader.StringList(Limits.List, Limits.Name));
}

/// <summary>u64 request id | string pool</summary>
public sealed record NeedWorker(ulong RequestId, string Pool) : IWireMessage<NeedWorker>
{
    public static MessageType Type => MessageType.NeedWorker;

    public static int DescriptorCount(NeedWorker message) => 0;

    public void Encode(ref WireWriter writer)
    {
        writer.I64((long)RequestId);
        writer.String(Pool);
    }

    public static NeedWorker Decode(ref WireReader reader) => new((ulong)reader.I64(), reader.String(Limits.Name));
}

/// <summary>u64 request id | string pool | i32 worker id | i32 pid. Descriptor: the channel to the worker.</summary>
public sealed record WorkerReady(ulong RequestId, string Pool, int WorkerId, int Pid) : IWireMessage<WorkerReady>
{
    public static MessageType Type => MessageType.WorkerReady;

    public static int DescriptorCount(WorkerReady message) => 1;

    public void Encode(ref WireWriter writer)
    {
        writer.I64((long)RequestId);
        writer.String(Pool);
        writer.I32(WorkerId);
        writer.I32(Pid);
    }

    public static WorkerReady Decode(ref WireReader reader) => new((ulong)reader.I64(), reader.String(Limits.Name), reader.I32(), reader.I32());
}

/// <summary>u64 request id | string pool | string reason | [i32 retry after, ms: appended; absent from older masters]</summary>
public sealed record WorkerRefused(ulong RequestId, string Pool, string Reason) : IWireMessage<WorkerRefused>
{
    public static MessageType Type => MessageType.WorkerRefused;

    public static int DescriptorCount(WorkerRefused message) => 0;

    /// <summary>Above 0: the pool's workers fail to start and the master backs off this long; connections waiting for
    /// a worker of the pool get 503 now instead of waiting. 0: a limit (a worker may free up).</summary>
    public int RetryAfterMs { get; init; }

    public void Encode(ref WireWriter writer)
    {
        writer.I64((long)RequestId);
        writer.String(Pool);
        writer.String(Reason);
        writer.I32(RetryAfterMs);
    }

    public static WorkerRefused Decode(ref WireReader reader)
    {
        var refused = new WorkerRefused((ulong)reader.I64(), reader.String(Limits.Name), reader.String(Limits.Text));
        if (reader.Remaining == 0)
            return refused;
        var retry = reader.I32();
        if (retry < 0)
            throw new WireException($"WorkerRefused with a negative retry delay ({retry} ms)");
        return refused with { RetryAfterMs = retry };
    }
}

/// <summary>i32 worker id | string pool | string reason</summary>
public sealed record WorkerGone(int WorkerId, string Pool, string Reason) : IWireMessage<WorkerGone>
{
    public static MessageType Type => MessageType.WorkerGone;

    public static int DescriptorCount(WorkerGone message) => 0;

    public void Encode(ref WireWriter writer)
    {
        writer.I32(WorkerId);
        writer.String(Pool);
        writer.String(Reason);
    }

    public static WorkerGone Decode(ref WireReader reader) => new(reader.I32(), reader.String(Limits.Name), reader.String(Limits.Text));
}

/// <summary>
/// string pool | i32 worker id | blob pool configuration (UTF-8 JSON, ≤ 60000 bytes; empty when it travels as a memfd) | string-list probe paths |
/// i32 probe threads | i32 number of <see cref="LogFiles"/> and <see cref="ErrorLogFiles"/> messages that follow.
/// Descriptors: the channel to the dispatcher; and, when the blob is empty, the pool configuration in a sealed memfd
/// (a pool of thousands of vhosts does not fit a datagram).
/// </summary>
public sealed record WorkerSetup(string Pool, int WorkerId, byte[] PoolJson, string[] ProbePaths, int ProbeThreads, int LogFileMessages) : IWireMessage<WorkerSetup>
{
    /// <summary>A pool configuration above this travels in a sealed memfd (second descriptor), the blob left empty.</summary>
    public const int MaxInlineJson = 48 * 1024;

    public static MessageType Type => MessageType.WorkerSetup;

    public static int DescriptorCount(WorkerSetup message) => message.PoolJson.Length == 0 ? 2 : 1;

    public void Encode(ref WireWriter writer)
    {
        writer.String(Pool);
        writer.I32(WorkerId);
        writer.Blob(PoolJson);
        writer.StringList(ProbePaths);
        writer.I32(ProbeThreads);
        writer.I32(LogFileMessages);
    }

    public static WorkerSetup Decode(ref WireReader reader)
    {
        var pool = reader.String(Limits.Name);
        var id = reader.I32();
        var json = reader.Blob(60000).ToArray();
        var probes = reader.StringList(64, Limits.Path);
        var threads = reader.I32();
        if (threads is < 1 or > 256)
            throw new WireException($"probe thread count {threads} outside 1..256");
        var logMessages = reader.I32();
        if (logMessages is < 0 or > 64)
            throw new WireException($"{logMessages} log file messages outside 0..64");
        return new WorkerSetup(pool, id, json, probes, threads, logMessages);
    }
}

/// <summary>string-list vhost names, one per descriptor, in order. Descriptors: the vhosts' access logs (append-only).</summary>
public sealed record LogFiles(string[] Vhosts) : IWireMessage<LogFiles>
{
    public static MessageType Type => MessageType.LogFiles;

    public static int DescriptorCount(LogFiles message) => message.Vhosts.Length;

    public void Encode(ref WireWriter writer) => writer.StringList(Vhosts);

    public static LogFiles Decode(ref WireReader reader) => new(reader.StringList(IpcChannel.MaxDescriptors, Limits.Name));
}

/// <summary>string-list vhost names, one per descriptor, in order (the layout of <see cref="LogFiles"/>). Descriptors: the vhosts' error logs (append-only).</summary>
public sealed record ErrorLogFiles(string[] Vhosts) : IWireMessage<ErrorLogFiles>
{
    public static MessageType Type => MessageType.ErrorLogFiles;

    public static int DescriptorCount(ErrorLogFiles message) => message.Vhosts.Length;

    public void Encode(ref WireWriter writer) => writer.StringList(Vhosts);

    public static ErrorLogFiles Decode(ref WireReader reader) => new(reader.StringList(IpcChannel.MaxDescriptors, Limits.Name));
}

/// <summary>How the dispatcher hands a connection over.</summary>
public enum ConnectionMode : byte
{
    /// <summary>Plain HTTP: the client's socket itself, with the request head already read.</summary>
    PlainHttp = 1,

    /// <summary>TLS terminated in the dispatcher: a socketpair carrying plaintext.</summary>
    TerminatedTls = 2,

    /// <summary>TLS passthrough: the client's socket with the ClientHello already read.</summary>
    PassthroughTls = 3,

    /// <summary>
    /// TLS terminated by the dispatcher and the session handed over: the client's socket, the session's traffic
    /// secrets and sequence numbers (<see cref="Dispatch.Wire.Tls.TlsSessionState"/>), and the ciphertext already
    /// read past the handshake. The worker runs the record layer.
    /// </summary>
    HandedTls = 4,
}

/// <summary>Application protocol spoken on the handed connection.</summary>
public enum AppProtocol : byte
{
    Http1 = 1,
    Http2 = 2,
}

/// <summary>
/// u64 connection id | u8 mode | u8 protocol | string client | string local | opt string sni |
/// opt string tls protocol | opt string tls cipher | blob bytes already read (≤ 60000)
/// [mode HandedTls only: the session state, <see cref="Dispatch.Wire.Tls.TlsSessionState"/>'s layout
/// [then, only when not empty: blob plaintext (≤ 60000), application data the dispatcher already decrypted (the first
/// request head of an identity vhost), to be read before anything the record layer decrypts]].
/// Descriptor: the connection.
/// </summary>
public sealed record Connection(
    ulong ConnectionId,
    ConnectionMode Mode,
    AppProtocol Protocol,
    string Client,
    string Local,
    string? Sni,
    string? TlsProtocol,
    string? TlsCipher,
    ReadOnlyMemory<byte> Initial,
    Dispatch.Wire.Tls.TlsSessionState? Session = null,
    ReadOnlyMemory<byte> Plaintext = default) : IWireMessage<Connection>
{
    public const int MaxInitial = 60000;

    public static MessageType Type => MessageType.Connection;

    public static int DescriptorCount(Connection message) => 1;

    public void Encode(ref WireWriter writer)
    {
        writer.I64((long)ConnectionId);
        writer.U8((byte)Mode);
        writer.U8((byte)Protocol);
        writer.String(Client);
        writer.String(Local);
        writer.OptionalString(Sni);
        writer.OptionalString(TlsProtocol);
        writer.OptionalString(TlsCipher);
        writer.Blob(Initial.Span);
        if ((Mode == ConnectionMode.HandedTls) != (Session is not null))
            throw new InvalidOperationException("a session state travels with mode HandedTls, and only with it");
        Session?.Encode(ref writer);
        if (!Plaintext.IsEmpty)
        {
            if (Session is null || Plaintext.Length > MaxInitial)
                throw new InvalidOperationException("decrypted plaintext travels with mode HandedTls only, at most MaxInitial bytes");
            writer.Blob(Plaintext.Span);
        }
    }

    public static Connection Decode(ref WireReader reader)
    {
        var id = (ulong)reader.I64();
        var mode = reader.U8();
        if (mode is < 1 or > 4)
            throw new WireException($"unknown connection mode {mode}");
        var protocol = reader.U8();
        if (protocol is < 1 or > 2)
            throw new WireException($"unknown application protocol {protocol}");
        var client = reader.String(Limits.Name);
        var local = reader.String(Limits.Name);
        var sni = reader.OptionalString(Limits.Name);
        var tlsProtocol = reader.OptionalString(Limits.Name);
        var tlsCipher = reader.OptionalString(Limits.Name);
        var initial = reader.Blob(MaxInitial).ToArray();
        var session = mode == (byte)ConnectionMode.HandedTls ? Dispatch.Wire.Tls.TlsSessionState.Decode(ref reader) : null;
        var plaintext = session is not null && reader.Remaining > 0 ? reader.Blob(MaxInitial).ToArray() : [];
        return new Connection(id, (ConnectionMode)mode, (AppProtocol)protocol, client, local, sni, tlsProtocol, tlsCipher, initial, session, plaintext);
    }
}

/// <summary>
/// u32 open connections | u64 connections received so far. The dispatcher adds what it handed over
/// since (sent − received) to know the load without a race against messages in flight.
/// </summary>
public sealed record WorkerLoad(uint OpenConnections, ulong Received) : IWireMessage<WorkerLoad>
{
    public static MessageType Type => MessageType.WorkerLoad;

    public static int DescriptorCount(WorkerLoad message) => 0;

    public void Encode(ref WireWriter writer)
    {
        writer.U32(OpenConnections);
        writer.I64((long)Received);
    }

    public static WorkerLoad Decode(ref WireReader reader) => new(reader.U32(), (ulong)reader.I64());
}

/// <summary>u64 request id</summary>
public sealed record StatsRequest(ulong RequestId) : IWireMessage<StatsRequest>
{
    public static MessageType Type => MessageType.StatsRequest;

    public static int DescriptorCount(StatsRequest message) => 0;

    public void Encode(ref WireWriter writer) => writer.I64((long)RequestId);

    public static StatsRequest Decode(ref WireReader reader) => new((ulong)reader.I64());
}

/// <summary>One counter or gauge: a metric name with its labels, in Prometheus syntax (checked by the master), and its value.</summary>
public readonly record struct StatCounter(string Key, long Value);

/// <summary>One worker as its dispatcher sees it: open connections (reported plus handed since) and connections handed in all.</summary>
public readonly record struct WorkerStat(int Pid, string Pool, uint Open, ulong Handed);

/// <summary>
/// u64 request id | u16 n ≤ 1024, n × (string key ≤ 255 | i64 value) | u16 m ≤ 4096, m × (i32 pid | string pool | u32 open | u64 handed)
/// </summary>
public sealed record DispatcherStats(ulong RequestId, StatCounter[] Counters, WorkerStat[] Workers) : IWireMessage<DispatcherStats>
{
    public const int MaxCounters = 1024;
    public const int MaxWorkers = 4096;

    public static MessageType Type => MessageType.DispatcherStats;

    public static int DescriptorCount(DispatcherStats message) => 0;

    public void Encode(ref WireWriter writer)
    {
        writer.I64((long)RequestId);
        writer.U16((ushort)Counters.Length);
        foreach (var c in Counters)
        {
            writer.String(c.Key);
            writer.I64(c.Value);
        }

        writer.U16((ushort)Workers.Length);
        foreach (var w in Workers)
        {
            writer.I32(w.Pid);
            writer.String(w.Pool);
            writer.U32(w.Open);
            writer.I64((long)w.Handed);
        }
    }

    public static DispatcherStats Decode(ref WireReader reader)
    {
        var id = (ulong)reader.I64();
        int n = reader.U16();
        if (n > MaxCounters)
            throw new WireException($"{n} counters exceed the limit of {MaxCounters}");
        var counters = new StatCounter[n];
        for (var i = 0; i < n; i++)
            counters[i] = new StatCounter(reader.String(Limits.Name), reader.I64());
        int m = reader.U16();
        if (m > MaxWorkers)
            throw new WireException($"{m} workers exceed the limit of {MaxWorkers}");
        var workers = new WorkerStat[m];
        for (var i = 0; i < m; i++)
            workers[i] = new WorkerStat(reader.I32(), reader.String(Limits.Name), reader.U32(), (ulong)reader.I64());
        return new DispatcherStats(id, counters, workers);
    }
}

/// <summary>u64 request id</summary>
public sealed record MetricsRequest(ulong RequestId) : IWireMessage<MetricsRequest>
{
    public static MessageType Type => MessageType.MetricsRequest;

    public static int DescriptorCount(MetricsRequest message) => 0;

    public void Encode(ref WireWriter writer) => writer.I64((long)RequestId);

    public static MetricsRequest Decode(ref WireReader reader) => new((ulong)reader.I64());
}

/// <summary>u64 request id | bool ok. Descriptor (when ok): the exposition text, UTF-8, in a sealed memfd.</summary>
public sealed record MetricsReply(ulong RequestId, bool Ok) : IWireMessage<MetricsReply>
{
    public static MessageType Type => MessageType.MetricsReply;

    public static int DescriptorCount(MetricsReply message) => message.Ok ? 1 : 0;

    public void Encode(ref WireWriter writer)
    {
        writer.I64((long)RequestId);
        writer.Bool(Ok);
    }

    public static MetricsReply Decode(ref WireReader reader) => new((ulong)reader.I64(), reader.Bool());
}
