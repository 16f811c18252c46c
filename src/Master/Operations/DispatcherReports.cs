using System.Collections.Concurrent;
using Dispatch.Master.Children;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Serilog;

namespace Dispatch.Master.Operations;

/// <summary>
/// What the dispatchers report when asked (StatsRequest → DispatcherStats): their counters and the open connections
/// per worker. Answers are believed only for a request sent to that very dispatcher, and only for the keys of the
/// catalogue. The counters of dispatchers gone (replaced by an upgrade, or dead) are carried, so that no *_total
/// ever goes backwards.
/// </summary>
internal sealed class DispatcherReports(ILogger log)
{
    private static readonly TimeSpan StatsTimeout = TimeSpan.FromSeconds(3);
    private readonly ConcurrentDictionary<ulong, (ChildProcess From, TaskCompletionSource<DispatcherStats> Waiter)> _waiters = new();
    // The last counters each live dispatcher reported, and the sum of those of dispatchers gone since.
    private readonly ConcurrentDictionary<int, DispatcherStats> _last = new();
    private readonly ConcurrentDictionary<string, long> _carried = new(StringComparer.Ordinal);
    // The same for the vhosts' traffic (what the dispatcher's workers served, per vhost).
    private readonly ConcurrentDictionary<int, VhostTraffic[]> _lastTraffic = new();
    private readonly ConcurrentDictionary<string, VhostTraffic> _carriedTraffic = new(StringComparer.Ordinal);
    private long _next;

    /// <summary>The counters of dispatchers gone, to be added in.</summary>
    public IEnumerable<KeyValuePair<string, long>> Carried => _carried;

    /// <summary>The vhosts' traffic of dispatchers gone, to be added in.</summary>
    public IEnumerable<VhostTraffic> CarriedTraffic => _carriedTraffic.Values;

    /// <summary>The vhosts' traffic <paramref name="dispatcher"/> reported with its last counters (none: it has not answered).</summary>
    public IReadOnlyList<VhostTraffic> TrafficOf(ChildProcess dispatcher) => _lastTraffic.GetValueOrDefault(dispatcher.Pid) ?? [];

    /// <summary>A dispatcher has exited: its last reported counters and traffic are carried into the totals.</summary>
    public void Forget(ChildProcess dispatcher)
    {
        if (_lastTraffic.TryRemove(dispatcher.Pid, out var traffic))
        {
            foreach (var t in traffic)
                _carriedTraffic.AddOrUpdate(t.Vhost, t, (_, sum) => sum.Plus(t));
        }

        if (!_last.TryRemove(dispatcher.Pid, out var last))
            return;
        foreach (var c in last.Counters.Where(c => Prometheus.NameOf(c.Key).EndsWith("_total", StringComparison.Ordinal)))
            _carried.AddOrUpdate(c.Key, c.Value, (_, v) => v + c.Value);
    }

    /// <summary>Asks every given dispatcher (serving or draining) for its counters and workers; a silent one is reported as such.</summary>
    public async Task<List<(ChildProcess Dispatcher, bool Retiring, DispatcherStats? Stats)>> GatherAsync(IEnumerable<(ChildProcess Dispatcher, bool Retiring)> targets)
    {
        var asks = targets.Select(async t =>
        {
            try
            {
                return (t.Dispatcher, t.Retiring, (DispatcherStats?)await AskAsync(t.Dispatcher, StatsTimeout).ConfigureAwait(false));
            }
            catch (Exception e) when (e is TimeoutException or SysCallException or ObjectDisposedException)
            {
                log.Warning("Dispatcher {Pid} did not report its counters: {Reason}", t.Dispatcher.Pid, e.Message);
                return (t.Dispatcher, t.Retiring, (DispatcherStats?)null);
            }
        });
        return [.. await Task.WhenAll(asks).ConfigureAwait(false)];
    }

    /// <summary>
    /// One StatsRequest to <paramref name="dispatcher"/> and its answer. A dispatcher reads its channel in order, so
    /// the answer also proves that everything sent to it before (a RouteUpdate) has been applied.
    /// </summary>
    public async Task<DispatcherStats> AskAsync(ChildProcess dispatcher, TimeSpan timeout)
    {
        // Each ask on its own: a dispatcher that does not read its channel must not stall the others (nor the caller).
        await Task.Yield();
        var id = (ulong)Interlocked.Increment(ref _next);
        var waiter = new TaskCompletionSource<DispatcherStats>(TaskCreationOptions.RunContinuationsAsynchronously);
        _waiters[id] = (dispatcher, waiter);
        try
        {
            dispatcher.Channel.Send(new StatsRequest(id));
            return await waiter.Task.WaitAsync(timeout).ConfigureAwait(false);
        }
        finally
        {
            _waiters.TryRemove(id, out _);
        }
    }

    /// <summary>
    /// A dispatcher's answer, with the vhosts' traffic it carried: believed only for a request we sent to that very
    /// dispatcher, and only the keys of our catalogue (the traffic's vhosts are checked against the config when rendered).
    /// </summary>
    public void OnStats(ChildProcess dispatcher, DispatcherStats stats, IReadOnlyList<VhostTraffic> traffic)
    {
        if (!_waiters.TryGetValue(stats.RequestId, out var entry) || entry.From != dispatcher)
        {
            log.Debug("Dispatcher {Pid} answered stats request {Id}, which is not pending for it", dispatcher.Pid, stats.RequestId);
            return;
        }

        var bad = stats.Counters.Where(c => !Prometheus.ReportedKey().IsMatch(c.Key)).ToList();
        if (bad.Count > 0)
        {
            log.Warning("Dispatcher {Pid} reported {Count} counters outside the catalogue (first: {Key}); dropped", dispatcher.Pid, bad.Count, bad[0].Key);
            stats = stats with { Counters = [.. stats.Counters.Where(c => Prometheus.ReportedKey().IsMatch(c.Key))] };
        }

        _last[dispatcher.Pid] = stats;
        _lastTraffic[dispatcher.Pid] = [.. traffic];
        entry.Waiter.TrySetResult(stats);
    }
}
