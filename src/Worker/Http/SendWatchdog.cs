using System.Collections.Concurrent;
using System.Net.Sockets;
using Dispatch.Platform.Hosting;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;

namespace Dispatch.Worker.Http;

/// <summary>
/// The worker's send timeout (a pool's <c>timeouts.send</c>, nginx's send_timeout): every connection's output is a
/// <see cref="SendTimeoutPipeWriter"/>; a timer looks at those with a flush pending and aborts each whose flush has
/// waited longer than the timeout, with a reset (SO_LINGER 0) so that neither side keeps the unsent bytes. The timer
/// runs only while a connection is watched: an idle worker is not woken by it (docs/coldstart.md, density).
/// </summary>
internal sealed class SendWatchdog : IDisposable
{
    private readonly ConcurrentDictionary<SendTimeoutPipeWriter, byte> _watched = new();
    private readonly long _timeoutMs;
    private readonly Serilog.ILogger _log;
    private readonly ConnectionLogBudget? _connectionLog;
    private readonly Timer _timer;
    private readonly TimeSpan _period;
    private readonly Lock _gate = new();
    private bool _running;
    private bool _disposed;

    /// <param name="timeout">How long a flush may wait for the client.</param>
    /// <param name="log">Where a closed connection's line goes.</param>
    /// <param name="connectionLog">The worker's budget for lines about single connections; null: every line.</param>
    public SendWatchdog(TimeSpan timeout, Serilog.ILogger log, ConnectionLogBudget? connectionLog = null)
    {
        _timeoutMs = (long)timeout.TotalMilliseconds;
        _log = log;
        _connectionLog = connectionLog;
        _period = TimeSpan.FromMilliseconds(Math.Clamp(_timeoutMs / 4, 50, 1000));
        _timer = new Timer(_ => Check(), null, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Wraps <paramref name="connection"/>'s output; dispose the result when the connection ends.</summary>
    public Watch Add(ConnectionContext connection)
    {
        var writer = new SendTimeoutPipeWriter(connection.Transport.Output, connection);
        _watched[writer] = 0;
        if (!Volatile.Read(ref _running))
            Run(true);
        return new Watch(this, writer);
    }

    /// <summary>Whether the timer runs (tests).</summary>
    internal bool Running => Volatile.Read(ref _running);

    /// <summary>Connections whose flush waits for their client now (tests).</summary>
    internal int Waiting => _watched.Keys.Count(w => w.WaitingSince != 0);

    /// <summary>One look now, as the timer would (tests).</summary>
    internal void CheckNow() => Check();

    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
            _timer.Dispose();
        }
    }

    /// <summary>
    /// Starts or stops the timer. Stopping looks again once stopped: a connection added meanwhile found the timer still
    /// running (so did not start it) and must not go unwatched.
    /// </summary>
    private void Run(bool start)
    {
        lock (_gate)
        {
            if (_disposed || _running == start)
                return;
            Volatile.Write(ref _running, start);
            _timer.Change(start ? _period : Timeout.InfiniteTimeSpan, start ? _period : Timeout.InfiniteTimeSpan);
            if (!start && !_watched.IsEmpty)
            {
                Volatile.Write(ref _running, true);
                _timer.Change(_period, _period);
            }
        }
    }

    private void Check()
    {
        var now = Environment.TickCount64;
        foreach (var writer in _watched.Keys)
        {
            var since = writer.WaitingSince;
            if (since == 0 || now - since < _timeoutMs || !_watched.TryRemove(writer, out _))
                continue;
            var connection = writer.Connection;
            if (_connectionLog?.Allow() ?? true)
                _log.Information("Connection {ConnectionId} from {Client}: nothing could be sent for {Timeout} ms; closed", connection.ConnectionId, connection.RemoteEndPoint, _timeoutMs);
            try
            {
                if (connection.Features.Get<IConnectionSocketFeature>()?.Socket is { } socket)
                    socket.LingerState = new LingerOption(true, 0);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                // Already closing.
            }

            connection.Abort(new ConnectionAbortedException($"nothing could be sent for {_timeoutMs} ms"));
        }

        if (_watched.IsEmpty)
            Run(false);
    }

    /// <summary>One connection's watched output.</summary>
    internal readonly struct Watch(SendWatchdog owner, SendTimeoutPipeWriter writer) : IDisposable
    {
        public SendTimeoutPipeWriter Output => writer;

        public void Dispose() => owner._watched.TryRemove(writer, out _);
    }
}
