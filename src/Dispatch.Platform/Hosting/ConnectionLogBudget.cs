using Serilog;

namespace Dispatch.Platform.Hosting;

/// <summary>
/// How many lines about single connections a process writes (the dispatcher's: refused, malformed, a handshake that
/// failed or timed out; a worker's: TLS alerts, broken TLS records, send timeouts, connections refused while stopping):
/// a burst of <see cref="DefaultBurst"/>, then <see cref="DefaultPerSecond"/> a second (a token bucket). Past it, lines are counted
/// instead, and the count is logged once per report interval (10 s) while there are any, so that a
/// flood of ten thousand slowloris heads or bad ClientHellos is a few hundred lines and not ten thousand, each also
/// relayed by the master (docs/floods.md). nginx logs such connections at <c>info</c>, below its default level.
/// </summary>
public sealed class ConnectionLogBudget : IDisposable
{
    /// <summary>Lines written at once before the budget applies.</summary>
    public const int DefaultBurst = 100;

    /// <summary>Lines a second after the burst.</summary>
    public const double DefaultPerSecond = 10;

    private readonly ILogger _log;
    private readonly string _what;
    private readonly int _burst;
    private readonly double _perSecond;
    private readonly long _reportEveryMs;
    private readonly Func<long> _clockMs;
    private readonly Timer _report;
    private readonly Lock _gate = new();
    private double _tokens;
    private long _stamp;
    private int _notLogged;
    private long _notLoggedTotal;
    private long _since;
    private bool _reportPending;
    private bool _disposed;

    /// <param name="log">Where the count of lines not written goes.</param>
    /// <param name="what">What the lines are about, for that count's line ("refused, malformed, ...").</param>
    /// <param name="burst">Lines at once (<see cref="DefaultBurst"/>).</param>
    /// <param name="perSecond">Lines a second after the burst (<see cref="DefaultPerSecond"/>).</param>
    /// <param name="reportEvery">How often the count is logged while lines are being counted (10 s unless given: tests).</param>
    /// <param name="clockMs">Milliseconds, monotonic (<see cref="Environment.TickCount64"/> unless given: tests).</param>
    public ConnectionLogBudget(ILogger log, string what, int burst = DefaultBurst, double perSecond = DefaultPerSecond, TimeSpan? reportEvery = null, Func<long>? clockMs = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(burst);
        ArgumentOutOfRangeException.ThrowIfNegative(perSecond);
        _log = log;
        _what = what;
        _burst = burst;
        _perSecond = perSecond;
        _reportEveryMs = (long)(reportEvery ?? TimeSpan.FromSeconds(10)).TotalMilliseconds;
        _clockMs = clockMs ?? (static () => Environment.TickCount64);
        _tokens = burst;
        _stamp = _clockMs();
        _report = new Timer(_ => Report());
    }

    /// <summary>Lines not written since the start (tests; the metrics count the connections themselves, by outcome).</summary>
    public long NotLogged
    {
        get
        {
            lock (_gate)
                return _notLoggedTotal;
        }
    }

    /// <summary>
    /// Whether a line about one connection may be written now: <see langword="true"/> takes one from the budget;
    /// <see langword="false"/> counts it (and the count is logged within the report interval).
    /// </summary>
    public bool Allow()
    {
        var now = _clockMs();
        lock (_gate)
        {
            _tokens = Math.Min(_burst, _tokens + ((now - _stamp) * _perSecond / 1000));
            _stamp = now;
            if (_tokens >= 1)
            {
                _tokens--;
                return true;
            }

            if (_notLogged == 0)
                _since = now;
            _notLogged++;
            _notLoggedTotal++;
            if (!_reportPending && !_disposed)
            {
                _reportPending = true;
                _report.Change(_reportEveryMs, Timeout.Infinite);
            }
        }

        return false;
    }

    /// <summary>Logs the lines counted since the last report, if any (the timer's work; tests call it).</summary>
    public void Report()
    {
        int count;
        long since;
        lock (_gate)
        {
            _reportPending = false;
            count = _notLogged;
            since = _since;
            _notLogged = 0;
        }

        if (count > 0)
        {
            _log.Warning(
                "{Count} lines about single connections ({What:l}) not logged in the last {Seconds} s: more than {Burst} at once or {PerSecond} a second",
                count,
                _what,
                Math.Max(1, (_clockMs() - since + 999) / 1000),
                _burst,
                _perSecond);
        }
    }

    public void Dispose()
    {
        lock (_gate)
            _disposed = true;
        _report.Dispose();
        Report();
    }
}
