using System.Collections.Concurrent;
using Dispatch.Wire;

namespace Dispatch.TlsDispatcher.Net;

/// <summary>
/// What the dispatcher answered itself, per vhost: redirects to https, 503 when no worker came, and an identity
/// vhost's answers before a login is handed over (401, 429, 400...). Counted as each answer is sent: its status, its
/// body's bytes, and the time since the connection's accept (what its client waited: a handshake, a login's hash, the
/// wait for a worker). They join the workers' counts of the same vhost in the table the master reads
/// (<see cref="Workers.WorkerPools.Traffic"/>), so that <c>dispatch_vhost_requests_total</c> counts a site's redirects and
/// its 503s too. Only a routed vhost gets an entry (a request for a name not served is no vhost's), and one a reload
/// removed is dropped when the table is next read.
/// </summary>
internal sealed class VhostAnswers
{
    private readonly ConcurrentDictionary<string, VhostCounters> _vhosts = new(StringComparer.Ordinal);

    /// <summary>One answer of <paramref name="status"/> for <paramref name="vhost"/>, with <paramref name="bodyBytes"/> of body, to a connection accepted at <paramref name="acceptedAt"/> (Environment.TickCount64).</summary>
    public void Record(string vhost, int status, long bodyBytes, long acceptedAt) =>
        _vhosts.GetOrAdd(vhost, static _ => new VhostCounters())
            .Record(status, bodyBytes, TimeSpan.FromMilliseconds(Math.Max(0, Environment.TickCount64 - acceptedAt)));

    /// <summary>The counts of the vhosts still <paramref name="routed"/>; the others are forgotten.</summary>
    public List<VhostTraffic> Snapshot(Func<string, bool> routed)
    {
        var counts = new List<VhostTraffic>(_vhosts.Count);
        foreach (var (vhost, counters) in _vhosts)
        {
            if (routed(vhost))
                counts.Add(counters.Snapshot(vhost));
            else
                _vhosts.TryRemove(vhost, out _);
        }

        return counts;
    }
}
