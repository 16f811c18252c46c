namespace Dispatch.Wire;

/// <summary>
/// What a vhost served since a start, as it is served: requests by status class, body bytes sent, request durations (a
/// sum and the buckets of <see cref="VhostTraffic.BucketBounds"/>). Bumped with <see cref="Interlocked"/> as each
/// request ends (no lock, no allocation); a <see cref="VhostTraffic"/> when read. A worker counts what it serves (its
/// reporter sends the counts to the dispatcher), the dispatcher what it answers itself (redirects, 503 without a
/// worker, a login's answers); both reach the metrics (docs/operations.md, "Metrics per vhost").
/// </summary>
public sealed class VhostCounters
{
    private readonly long[] _requests = new long[VhostTraffic.Classes];
    private readonly long[] _buckets = new long[VhostTraffic.BucketCount];
    private long _bytes;
    private long _micros;
    private long _changes;

    /// <summary>Called after each request is counted (the reporter's wake-up); null: nothing is told.</summary>
    public Action? Changed { get; set; }

    /// <summary>Requests counted so far: the reporter sends a vhost again only when this moved.</summary>
    public long Changes => Interlocked.Read(ref _changes);

    /// <summary>One request ended with <paramref name="status"/>, <paramref name="bytes"/> of body sent, after <paramref name="elapsed"/>.</summary>
    public void Record(int status, long bytes, TimeSpan elapsed)
    {
        var kind = VhostTraffic.ClassOf(status);
        if (kind < 0)
            return;
        var micros = Math.Max(0, (long)(elapsed.Ticks / TimeSpan.TicksPerMicrosecond));
        Interlocked.Increment(ref _requests[kind]);
        Interlocked.Add(ref _bytes, Math.Max(0, bytes));
        Interlocked.Add(ref _micros, micros);
        Interlocked.Increment(ref _buckets[VhostTraffic.BucketOf(micros)]);
        Interlocked.Increment(ref _changes);
        Changed?.Invoke();
    }

    /// <summary>The counts now, under <paramref name="vhost"/>'s name (each field read on its own: a request being counted may show in some only).</summary>
    public VhostTraffic Snapshot(string vhost)
    {
        var requests = new long[_requests.Length];
        var buckets = new long[_buckets.Length];
        for (var i = 0; i < requests.Length; i++)
            requests[i] = Interlocked.Read(ref _requests[i]);
        for (var i = 0; i < buckets.Length; i++)
            buckets[i] = Interlocked.Read(ref _buckets[i]);
        return new VhostTraffic(vhost, requests, Interlocked.Read(ref _bytes), Interlocked.Read(ref _micros), buckets);
    }
}
