namespace Dispatch.Wire;

/// <summary>
/// What one vhost served, counted since a point (a worker's start, for <see cref="WorkerTraffic"/>; the sum of
/// its workers, for a dispatcher's report): requests by status class, body bytes sent, and request durations, in
/// total and in the buckets of <see cref="BucketBounds"/> (each request counted in the first bucket whose bound it is
/// within; the last bucket has no bound). Every count is non-negative; the decoders refuse anything else.
/// </summary>
/// <remarks>
/// Layout: string vhost (1..255 bytes) | 5 × i64 requests (1xx, 2xx, 3xx, 4xx, 5xx) | i64 body bytes sent |
/// i64 duration sum (µs) | 12 × i64 duration buckets.
/// </remarks>
public sealed record VhostTraffic(string Vhost, long[] Requests, long BytesSent, long DurationMicros, long[] Buckets)
{
    /// <summary>Status classes counted: 1xx to 5xx.</summary>
    public const int Classes = 5;

    /// <summary>The buckets' upper bounds in microseconds (Prometheus' default histogram bounds, 5 ms to 10 s); one more bucket above the last.</summary>
    public static readonly long[] BucketBounds = [5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000];

    /// <summary>Buckets per vhost: one per bound, and the one above them.</summary>
    public static int BucketCount => BucketBounds.Length + 1;

    /// <summary>At most this many vhosts in one sealed table (a dispatcher's report).</summary>
    public const int MaxTableEntries = 65_536;

    /// <summary>The most bytes one entry takes (a 255-byte name).</summary>
    public static int MaxEncodedSize => 2 + Limits.Name + 8 * (Classes + 2 + BucketBounds.Length + 1);

    /// <summary>The most bytes a sealed table takes.</summary>
    public static int MaxTableSize => 4 + MaxTableEntries * MaxEncodedSize;

    /// <summary>An empty record for <paramref name="vhost"/>.</summary>
    public static VhostTraffic Empty(string vhost) => new(vhost, new long[Classes], 0, 0, new long[BucketCount]);

    /// <summary>Requests in all (the sum over the status classes).</summary>
    public long Total => Requests.Sum();

    /// <summary>The bucket of a request that took <paramref name="micros"/> microseconds.</summary>
    public static int BucketOf(long micros)
    {
        var i = 0;
        while (i < BucketBounds.Length && micros > BucketBounds[i])
            i++;
        return i;
    }

    /// <summary>The class index (0 for 1xx … 4 for 5xx) of a status code, or -1 outside 100..599.</summary>
    public static int ClassOf(int status) => status is >= 100 and < 600 ? status / 100 - 1 : -1;

    /// <summary>This record plus <paramref name="other"/> (same vhost; the name kept is this one's).</summary>
    public VhostTraffic Plus(VhostTraffic other)
    {
        var requests = new long[Classes];
        var buckets = new long[BucketCount];
        for (var i = 0; i < Classes; i++)
            requests[i] = Requests[i] + other.Requests[i];
        for (var i = 0; i < buckets.Length; i++)
            buckets[i] = Buckets[i] + other.Buckets[i];
        return new VhostTraffic(Vhost, requests, BytesSent + other.BytesSent, DurationMicros + other.DurationMicros, buckets);
    }

    public void Encode(ref WireWriter writer)
    {
        writer.String(Vhost);
        foreach (var n in Requests)
            writer.I64(n);
        writer.I64(BytesSent);
        writer.I64(DurationMicros);
        foreach (var n in Buckets)
            writer.I64(n);
    }

    public static VhostTraffic Decode(ref WireReader reader)
    {
        var vhost = reader.String(Limits.Name);
        if (vhost.Length == 0)
            throw new WireException("traffic of a vhost with an empty name");
        var requests = new long[Classes];
        for (var i = 0; i < Classes; i++)
            requests[i] = Count(ref reader, vhost, "requests");
        var bytes = Count(ref reader, vhost, "bytes sent");
        var micros = Count(ref reader, vhost, "duration");
        var buckets = new long[BucketCount];
        for (var i = 0; i < buckets.Length; i++)
            buckets[i] = Count(ref reader, vhost, "duration bucket");
        return new VhostTraffic(vhost, requests, bytes, micros, buckets);
    }

    private static long Count(ref WireReader reader, string vhost, string what)
    {
        var n = reader.I64();
        return n >= 0 ? n : throw new WireException($"traffic of {vhost}: a negative {what} count ({n})");
    }

    /// <summary>A table of vhosts (a dispatcher's report, in a sealed memfd): u32 n ≤ <see cref="MaxTableEntries"/>, n × entry, each vhost once.</summary>
    public static byte[] EncodeTable(IReadOnlyCollection<VhostTraffic> table)
    {
        var buffer = new byte[4 + table.Sum(t => 2 + System.Text.Encoding.UTF8.GetByteCount(t.Vhost) + 8 * (Classes + 2 + BucketCount))];
        var writer = new WireWriter(buffer);
        writer.U32((uint)table.Count);
        foreach (var t in table)
            t.Encode(ref writer);
        return buffer[..writer.Length];
    }

    /// <summary>The table <see cref="EncodeTable"/> wrote; a malformed one (bounds, a vhost twice, trailing bytes) is a <see cref="WireException"/>.</summary>
    public static VhostTraffic[] DecodeTable(ReadOnlySpan<byte> data)
    {
        var reader = new WireReader(data);
        var n = reader.U32();
        if (n > MaxTableEntries)
            throw new WireException($"a traffic table of {n} vhosts exceeds the limit of {MaxTableEntries}");
        var table = Read(ref reader, (int)n, "traffic table");
        reader.End();
        return table;
    }

    /// <summary><paramref name="n"/> entries, each vhost at most once.</summary>
    internal static VhostTraffic[] Read(ref WireReader reader, int n, string what)
    {
        var table = new VhostTraffic[n];
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < n; i++)
        {
            table[i] = Decode(ref reader);
            if (!names.Add(table[i].Vhost))
                throw new WireException($"{what}[{i}]: the vhost '{table[i].Vhost}' appears twice");
        }

        return table;
    }
}
