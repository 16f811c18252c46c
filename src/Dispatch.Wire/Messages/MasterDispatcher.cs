namespace Dispatch.Wire;

// The master and the dispatcher: set-up, routes, workers asked for and given, stats and metrics. Wire layouts, one
// record per MessageType, each with its encoder and decoder side by side (MessageType.cs: the catalogue).

/// <summary>
/// u16 n, n × (string protocol (<see cref="ListenerProtocols"/>; metrics at most once) | string endpoint | string-list trusted proxies) | string-list probe paths
/// (<see cref="JailProof.MaxProbeBytes"/> in all) | i32 probe threads.
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
        {
            listeners[i] = new ListenerInfo(reader.String(Limits.Name), reader.String(Limits.Name), reader.StringList(256, 64));
            if (!ListenerProtocols.All.Contains(listeners[i].Protocol, StringComparer.Ordinal))
                throw new WireException($"DispatcherSetup listeners[{i}].protocol: '{listeners[i].Protocol}' is not a listener protocol ({string.Join(", ", ListenerProtocols.All)})");
            if (listeners[i].Protocol == ListenerProtocols.Metrics && Array.FindIndex(listeners, 0, i, l => l.Protocol == ListenerProtocols.Metrics) is var first and >= 0)
                throw new WireException($"DispatcherSetup listeners[{i}].protocol: a second metrics listener (listeners[{first}] is one; the master gives one dispatcher at most one)");
        }
        var probes = JailProof.DecodeProbePaths(ref reader, Type);
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
/// | bool traffic. Each key at most once (the master adds them up and exposes them; a series twice spoils the whole
/// exposition). Descriptor (when <see cref="Traffic"/>): the vhosts' traffic, a table of <see cref="VhostTraffic"/>
/// (<see cref="VhostTraffic.EncodeTable"/>) in a sealed memfd.
/// </summary>
public sealed record DispatcherStats(ulong RequestId, StatCounter[] Counters, WorkerStat[] Workers, bool Traffic = false) : IWireMessage<DispatcherStats>
{
    public const int MaxCounters = 1024;
    public const int MaxWorkers = 4096;

    public static MessageType Type => MessageType.DispatcherStats;

    public static int DescriptorCount(DispatcherStats message) => message.Traffic ? 1 : 0;

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

        writer.Bool(Traffic);
    }

    public static DispatcherStats Decode(ref WireReader reader)
    {
        var id = (ulong)reader.I64();
        int n = reader.U16();
        if (n > MaxCounters)
            throw new WireException($"{n} counters exceed the limit of {MaxCounters}");
        var counters = new StatCounter[n];
        var keys = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < n; i++)
        {
            counters[i] = new StatCounter(reader.String(Limits.Name), reader.I64());
            if (!keys.Add(counters[i].Key))
                throw new WireException($"DispatcherStats counters[{i}]: the key '{counters[i].Key}' appears twice");
        }

        int m = reader.U16();
        if (m > MaxWorkers)
            throw new WireException($"{m} workers exceed the limit of {MaxWorkers}");
        var workers = new WorkerStat[m];
        for (var i = 0; i < m; i++)
            workers[i] = new WorkerStat(reader.I32(), reader.String(Limits.Name), reader.U32(), (ulong)reader.I64());
        return new DispatcherStats(id, counters, workers, reader.Bool());
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
