using Dispatch.TlsDispatcher.Workers;
using Dispatch.Wire;

namespace Dispatch.TlsDispatcher.Net;

/// <summary>
/// This dispatcher's counters: plain fields bumped with <see cref="Interlocked"/> on the paths that
/// already do the work (no allocation, no lock), read when the master asks (status, metrics).
/// </summary>
internal static class DispatcherMetrics
{
    public static long HandshakesOk;
    public static long HandshakesFailed;
    public static long HandshakesTimeout;
    public static long HandshakesUnknownName;
    public static long HandshakesNotTls;
    public static long HandshakesMalformed;
    public static long Passthrough;
    public static long HandedTls;
    public static long BytesFromClients;
    public static long BytesToClients;
    public static long NoWorker;
    public static long LoginsOk;
    public static long LoginsFailed;
    public static long LoginsThrottled;
    public static long LoginsChallenged;

    private static readonly long[] Responses = new long[600];

    /// <summary>A response the dispatcher itself gave (redirects, 4xx for bad heads, 503 without a worker).</summary>
    public static void Response(int code)
    {
        if (code is >= 100 and < 600)
            Interlocked.Increment(ref Responses[code]);
    }

    /// <summary>The dispatcher's own answers per vhost (the metrics per vhost).</summary>
    public static VhostAnswers VhostAnswers { get; } = new();

    /// <summary>
    /// A response the dispatcher itself gave for a vhost it serves (a redirect, a 503 without a worker, a login's
    /// answer): counted by code and for the vhost, with its body's bytes and the time since the accept.
    /// </summary>
    public static void Response(int code, string vhost, long bodyBytes, long acceptedAt)
    {
        Response(code);
        VhostAnswers.Record(vhost, code, bodyBytes, acceptedAt);
    }

    /// <summary>
    /// The answer to a StatsRequest: the counters in the message, and the vhosts' traffic (what the workers report,
    /// <see cref="WorkerPools.Traffic"/>) in a sealed memfd when there is any.
    /// </summary>
    public static void Answer(IpcChannel master, ulong requestId, IReadOnlyList<Frontend> frontends, WorkerPools workers)
    {
        var stats = Snapshot(requestId, frontends, workers);
        var traffic = workers.Traffic(VhostAnswers);
        if (traffic.Count == 0)
        {
            master.Send(stats);
            return;
        }

        var memfd = SealedBlob.Create("dispatch-traffic", VhostTraffic.EncodeTable(traffic));
        try
        {
            master.Send(stats with { Traffic = true }, [memfd]);
        }
        finally
        {
            Dispatch.Wire.Interop.WireLibc.Close(memfd);
        }
    }

    public static DispatcherStats Snapshot(ulong requestId, IReadOnlyList<Frontend> frontends, WorkerPools workers)
    {
        var counters = new List<StatCounter>();
        foreach (var f in frontends)
        {
            counters.Add(new StatCounter($"dispatch_connections_accepted_total{{listener=\"{f.Name}\"}}", f.Accepted));
            counters.Add(new StatCounter($"dispatch_connections_open{{listener=\"{f.Name}\"}}", f.InFlight));
        }

        void Add(string key, ref long field) => counters.Add(new StatCounter(key, Interlocked.Read(ref field)));
        Add("dispatch_tls_handshakes_total{result=\"ok\"}", ref HandshakesOk);
        Add("dispatch_tls_handshakes_total{result=\"failed\"}", ref HandshakesFailed);
        Add("dispatch_tls_handshakes_total{result=\"timeout\"}", ref HandshakesTimeout);
        Add("dispatch_tls_handshakes_total{result=\"unknown_name\"}", ref HandshakesUnknownName);
        Add("dispatch_tls_handshakes_total{result=\"not_tls\"}", ref HandshakesNotTls);
        Add("dispatch_tls_handshakes_total{result=\"malformed\"}", ref HandshakesMalformed);
        Add("dispatch_tls_passthrough_total", ref Passthrough);
        Add("dispatch_tls_handed_total", ref HandedTls);
        Add("dispatch_tls_bytes_total{direction=\"received\"}", ref BytesFromClients);
        Add("dispatch_tls_bytes_total{direction=\"sent\"}", ref BytesToClients);
        Add("dispatch_no_worker_total", ref NoWorker);
        Add("dispatch_logins_total{result=\"ok\"}", ref LoginsOk);
        Add("dispatch_logins_total{result=\"failed\"}", ref LoginsFailed);
        Add("dispatch_logins_total{result=\"throttled\"}", ref LoginsThrottled);
        Add("dispatch_logins_total{result=\"challenged\"}", ref LoginsChallenged);
        for (var code = 100; code < Responses.Length; code++)
        {
            var n = Interlocked.Read(ref Responses[code]);
            if (n > 0)
                counters.Add(new StatCounter($"dispatch_dispatcher_responses_total{{code=\"{code}\"}}", n));
        }

        // Stay within one datagram: 60 KB of workers at most (the rest is summed by pool in the counters).
        var list = new List<WorkerStat>();
        var budget = 60_000 - counters.Sum(c => c.Key.Length + 12);
        foreach (var w in workers.Describe())
        {
            budget -= 22 + System.Text.Encoding.UTF8.GetByteCount(w.Pool);
            if (budget < 0)
                break;
            list.Add(w);
        }

        return new DispatcherStats(requestId, [.. counters], [.. list]);
    }
}
