using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Dispatch.Worker.Http;

namespace Dispatch.Worker;

/// <summary>
/// Sends the dispatcher what each vhost of this worker served (<see cref="WorkerTraffic"/>, cumulative since the
/// worker started): a second after the first request counted since the last report, only the vhosts whose counts
/// moved, and once more as the worker ends (<see cref="Flush"/>, and <see cref="Dispose"/>). Its timer is one-shot and armed by a request, so an
/// idle worker is never woken for it. The dispatcher keeps the last report of each vhost; one lost (the channel gone)
/// costs only what the next would have carried.
/// </summary>
internal sealed class TrafficReporter : IDisposable
{
    /// <summary>How long after a request its counts are sent at the latest.</summary>
    public static readonly TimeSpan Period = TimeSpan.FromSeconds(1);

    private readonly IReadOnlyList<Vhost> _vhosts;
    private readonly Action<WorkerTraffic> _send;
    private readonly long[] _reported;
    private readonly Timer _timer;
    private readonly Lock _gate = new();
    private int _armed;

    public TrafficReporter(IReadOnlyList<Vhost> vhosts, Action<WorkerTraffic> send)
    {
        _vhosts = vhosts;
        _send = send;
        _reported = new long[vhosts.Count];
        _timer = new Timer(_ => Tick());
        foreach (var v in vhosts)
            v.Traffic.Changed = Wake;
    }

    /// <summary>A request was counted: a report goes within <see cref="Period"/> (the first such call since the last report arms the timer).</summary>
    public void Wake()
    {
        if (Volatile.Read(ref _armed) == 0 && Interlocked.Exchange(ref _armed, 1) == 0)
        {
            try
            {
                _timer.Change(Period, Timeout.InfiniteTimeSpan);
            }
            catch (ObjectDisposedException)
            {
            }
        }
    }

    /// <summary>Sends what moved since the last report, now (the worker is ending: its last requests must not be lost).</summary>
    public void Flush() => Report();

    private void Tick()
    {
        // Cleared before the counts are read: a request counted from here on arms the timer again.
        Interlocked.Exchange(ref _armed, 0);
        Report();
    }

    private void Report()
    {
        lock (_gate)
        {
            var batch = new List<VhostTraffic>();
            for (var i = 0; i < _vhosts.Count; i++)
            {
                var changes = _vhosts[i].Traffic.Changes;
                if (changes == _reported[i])
                    continue;
                _reported[i] = changes;
                batch.Add(_vhosts[i].Traffic.Snapshot(_vhosts[i].Name));
                if (batch.Count == WorkerTraffic.MaxEntries)
                {
                    Send(batch);
                    batch = [];
                }
            }

            if (batch.Count > 0)
                Send(batch);
        }
    }

    private void Send(List<VhostTraffic> batch)
    {
        try
        {
            _send(new WorkerTraffic([.. batch]));
        }
        catch (Exception e) when (e is SysCallException or ObjectDisposedException)
        {
            // The dispatcher closed its end (it is gone): nothing more can be told.
        }
    }

    /// <summary>Sends the last report (<see cref="Flush"/>) and stops the timer.</summary>
    public void Dispose()
    {
        _timer.Dispose();
        Flush();
    }
}
