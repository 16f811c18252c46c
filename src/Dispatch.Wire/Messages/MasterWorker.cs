namespace Dispatch.Wire;

// The master and a worker: its set-up and its log files. Wire layouts, one record per MessageType, each with its
// encoder and decoder side by side (MessageType.cs: the catalogue).

/// <summary>
/// string pool | i32 worker id | blob pool configuration (UTF-8 JSON, ≤ <see cref="MaxInlineJson"/> bytes; empty when it travels as a memfd) | string-list probe paths |
/// i32 probe threads | i32 number of <see cref="LogFiles"/> and <see cref="ErrorLogFiles"/> messages that follow.
/// Descriptors: the channel to the dispatcher; and, when the blob is empty, the pool configuration in a sealed memfd
/// (a pool of thousands of vhosts does not fit a datagram).
/// </summary>
public sealed record WorkerSetup(string Pool, int WorkerId, byte[] PoolJson, string[] ProbePaths, int ProbeThreads, int LogFileMessages) : IWireMessage<WorkerSetup>
{
    /// <summary>
    /// The largest pool configuration carried in the blob, one limit for both ends: the master inlines no more
    /// (<see cref="Inline"/>) and the decoder refuses more. A larger one travels in a sealed memfd (second descriptor),
    /// the blob left empty. 48 KiB of the 64 KiB datagram (<see cref="IpcChannel.MaxDatagram"/>) leaves 16 KiB for the
    /// rest of the message, the probe paths mostly; when they need more, the configuration goes in the memfd whatever
    /// its size.
    /// </summary>
    public const int MaxInlineJson = 48 * 1024;

    /// <summary>
    /// Whether a pool configuration of <paramref name="jsonLength"/> bytes travels in the blob of a WorkerSetup for
    /// <paramref name="pool"/> with <paramref name="probePaths"/>: at most <see cref="MaxInlineJson"/> bytes, and the
    /// whole datagram (header and every field, as <see cref="Encode"/> writes them) within
    /// <see cref="IpcChannel.MaxDatagram"/>. Otherwise it goes in a sealed memfd.
    /// </summary>
    public static bool Inline(string pool, int jsonLength, IReadOnlyList<string> probePaths)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(probePaths);
        if (jsonLength > MaxInlineJson)
            return false;
        long size = IpcChannel.HeaderSize + 2 + System.Text.Encoding.UTF8.GetByteCount(pool) + 4 + 4 + jsonLength + 2 + 4 + 4;
        foreach (var path in probePaths)
            size += 2 + System.Text.Encoding.UTF8.GetByteCount(path);
        return size <= IpcChannel.MaxDatagram;
    }

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
        var json = reader.Blob(MaxInlineJson).ToArray();
        var probes = JailProof.DecodeProbePaths(ref reader, Type);
        var threads = reader.I32();
        if (threads is < 1 or > 256)
            throw new WireException($"probe thread count {threads} outside 1..256");
        var logMessages = reader.I32();
        if (logMessages is < 0 or > 64)
            throw new WireException($"{logMessages} log file messages outside 0..64");
        return new WorkerSetup(pool, id, json, probes, threads, logMessages);
    }
}

/// <summary>
/// string-list vhost names, one per descriptor, in order, each a host name or wildcard and at most once (a name twice
/// would leave one of its two files unused). Descriptors: the vhosts' access logs (append-only).
/// </summary>
public sealed record LogFiles(string[] Vhosts) : IWireMessage<LogFiles>
{
    public static MessageType Type => MessageType.LogFiles;

    public static int DescriptorCount(LogFiles message) => message.Vhosts.Length;

    public void Encode(ref WireWriter writer) => writer.StringList(Vhosts);

    public static LogFiles Decode(ref WireReader reader) => new(DecodeVhosts(ref reader, Type));

    /// <summary>The vhost names of a <see cref="LogFiles"/> or <see cref="ErrorLogFiles"/>, refused when one repeats.</summary>
    internal static string[] DecodeVhosts(ref WireReader reader, MessageType type)
    {
        var vhosts = reader.StringList(IpcChannel.MaxDescriptors, Limits.Name);
        for (var i = 0; i < vhosts.Length; i++)
        {
            // A vhost's name, as the pool settings name it (a file under a name that is none would be held for nothing).
            if (!Payloads.HostNames.IsValidPattern(vhosts[i]))
                throw new WireException($"{type} vhosts[{i}]: '{vhosts[i]}' is not a valid host name or '*.' wildcard ({Payloads.HostNames.PatternRule})");
            var first = Array.IndexOf(vhosts, vhosts[i], 0, i);
            if (first >= 0)
                throw new WireException($"{type} vhosts[{i}]: '{vhosts[i]}' is already vhosts[{first}]");
        }

        return vhosts;
    }
}

/// <summary>string-list vhost names, one per descriptor, in order (the layout of <see cref="LogFiles"/>). Descriptors: the vhosts' error logs (append-only).</summary>
public sealed record ErrorLogFiles(string[] Vhosts) : IWireMessage<ErrorLogFiles>
{
    public static MessageType Type => MessageType.ErrorLogFiles;

    public static int DescriptorCount(ErrorLogFiles message) => message.Vhosts.Length;

    public void Encode(ref WireWriter writer) => writer.StringList(Vhosts);

    public static ErrorLogFiles Decode(ref WireReader reader) => new(LogFiles.DecodeVhosts(ref reader, Type));
}
