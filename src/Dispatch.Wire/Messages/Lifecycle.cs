using System.Text;

namespace Dispatch.Wire;

// Every child and the master: hello, jail spec and proof, ready, stop. Wire layouts, one record per MessageType,
// each with its encoder and decoder side by side (MessageType.cs: the catalogue and its stability rules).

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

/// <summary>One resource limit: u8 resource (an RLIMIT_* below 16, each at most once in a spec) | u64 soft | u64 hard (soft ≤ hard).</summary>
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

    /// <summary>Resources are RLIMIT_* numbers below RLIM_NLIMITS (16 on Linux).</summary>
    public const int ResourceCount = 16;

    public static JailSpec Decode(ref WireReader reader)
    {
        var roleByte = reader.U8();
        if (roleByte is not ((byte)ProcessRole.Dispatcher or (byte)ProcessRole.Worker))
            throw new WireException($"JailSpec role: unknown role {roleByte}");
        var role = (ProcessRole)roleByte;
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
        {
            var limit = new ResourceLimit(reader.U8(), (ulong)reader.I64(), (ulong)reader.I64());
            if (limit.Resource >= ResourceCount)
                throw new WireException($"JailSpec limits[{i}]: unknown resource {limit.Resource} (RLIMIT_* is below {ResourceCount})");
            if (limit.Soft > limit.Hard)
                throw new WireException($"JailSpec limits[{i}]: resource {limit.Resource} has a soft limit {limit.Soft} above its hard limit {limit.Hard}");
            if (Array.FindIndex(limits, 0, i, l => l.Resource == limit.Resource) is var first and >= 0)
                throw new WireException($"JailSpec limits[{i}]: resource {limit.Resource} is already limits[{first}]");
            limits[i] = limit;
        }

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
/// i32 opened (0 ≤ opened ≤ tried) | string childOutcome | bool childOpened) | optionally: u16 n, n × i32 errno of lstat(path)
/// for each probe in order (0: the path exists in the process's view; 2 ENOENT: it does not). The
/// last part may be absent (worker programs written before it); the master then knows nothing of
/// existence, which a chroot pool does not accept.
/// </summary>
public sealed record JailProof(uint Uid, uint Gid, bool RegainRootRefused, bool NoNewPrivs, ProbeResult[] Probes, int[]? LStatErrors = null) : IWireMessage<JailProof>
{
    /// <summary>
    /// The most paths a child proves it cannot open: the probe lists of <see cref="DispatcherSetup"/> and
    /// <see cref="WorkerSetup"/>, and the probes of this proof, each refuse more when decoded.
    /// </summary>
    public const int MaxProbes = 64;

    /// <summary>The most bytes (UTF-8) of one probe path: the wire's limit of a path (Linux's PATH_MAX).</summary>
    public const int MaxProbePathBytes = Limits.Path;

    /// <summary>
    /// The most bytes of probe paths in one probe list, all together (UTF-8, without their length prefixes): one limit
    /// for the three messages that carry the list (<see cref="DispatcherSetup"/>, <see cref="WorkerSetup"/> and this
    /// proof): the master sends no more (config <c>jailProbe.paths</c> at most 16 KiB, its own probes the rest) and the
    /// decoders refuse more. Derived from the 65536-byte datagram (<see cref="IpcChannel.MaxDatagram"/>): the largest of
    /// the three, this proof with <see cref="MaxProbes"/> probes each with an outcome of <see cref="MaxOutcomeBytes"/>,
    /// holds 22 + 64 × (17 + 128) = 9302 bytes besides its paths; 48 KiB of paths make it 58454 bytes, and leave a
    /// DispatcherSetup over 16 KiB for its listeners.
    /// </summary>
    public const int MaxProbeBytes = 48 * 1024;

    /// <summary>The most bytes of a probe's child outcome a proof is sized for (<see cref="TrimOutcome"/>).</summary>
    public const int MaxOutcomeBytes = 128;

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
        if (count > MaxProbes)
            throw new WireException($"{count} probes exceed the limit of {MaxProbes}");
        var probes = new ProbeResult[count];
        long pathBytes = 0;
        for (var i = 0; i < count; i++)
        {
            probes[i] = new ProbeResult(reader.String(Limits.Path), reader.I32(), reader.I32(), reader.String(Limits.Text), reader.Bool());
            if (probes[i].ThreadsTried < 0 || probes[i].ThreadsOpened < 0 || probes[i].ThreadsOpened > probes[i].ThreadsTried)
                throw new WireException($"JailProof probes[{i}] ({probes[i].Path}): {probes[i].ThreadsOpened} of {probes[i].ThreadsTried} threads opened it, not a count of threads");
            pathBytes += Encoding.UTF8.GetByteCount(probes[i].Path);
        }

        if (pathBytes > MaxProbeBytes)
            throw new WireException($"JailProof probes: {pathBytes} bytes of paths in all exceed the limit of {MaxProbeBytes}");

        if (reader.Remaining == 0)
            return new JailProof(uid, gid, regain, nnp, probes);
        int errorCount = reader.U16();
        if (errorCount != count)
            throw new WireException($"{errorCount} lstat results for {count} probes");
        var errors = new int[errorCount];
        for (var i = 0; i < errorCount; i++)
        {
            errors[i] = reader.I32();
            if (errors[i] < 0)
                throw new WireException($"JailProof lstat result [{i}]: {errors[i]} is not an errno (0 or positive)");
        }

        return new JailProof(uid, gid, regain, nnp, probes, errors);
    }

    /// <summary>A probe list of <see cref="DispatcherSetup"/> or <see cref="WorkerSetup"/>: at most <see cref="MaxProbes"/> paths of <see cref="MaxProbePathBytes"/> each, <see cref="MaxProbeBytes"/> in all.</summary>
    internal static string[] DecodeProbePaths(ref WireReader reader, MessageType type)
    {
        var paths = reader.StringList(MaxProbes, MaxProbePathBytes);
        long bytes = 0;
        foreach (var path in paths)
            bytes += Encoding.UTF8.GetByteCount(path);
        if (bytes > MaxProbeBytes)
            throw new WireException($"{type} probe paths: {bytes} bytes in all exceed the limit of {MaxProbeBytes}");
        return paths;
    }

    /// <summary><paramref name="outcome"/> cut to at most <see cref="MaxOutcomeBytes"/> bytes of UTF-8 (on a character boundary).</summary>
    public static string TrimOutcome(string outcome)
    {
        ArgumentNullException.ThrowIfNull(outcome);
        if (Encoding.UTF8.GetByteCount(outcome) <= MaxOutcomeBytes)
            return outcome;
        var end = Math.Min(outcome.Length, MaxOutcomeBytes);
        while (end > 0 && (Encoding.UTF8.GetByteCount(outcome.AsSpan(0, end)) > MaxOutcomeBytes || char.IsHighSurrogate(outcome[end - 1])))
            end--;
        return outcome[..end];
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
