using System.Collections.Concurrent;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;

namespace Dispatch.Worker.Http;

/// <summary>
/// The worker's send timeout (a pool's <c>timeouts.send</c>, nginx's send_timeout): every connection's output is a
/// <see cref="SendTimeoutPipeWriter"/>; a timer looks at those with a flush pending and aborts each whose flush has
/// waited longer than the timeout, with a reset (SO_LINGER 0) so that neither side keeps the unsent bytes.
/// </summary>
internal sealed class SendWatchdog : IDisposable
{
    private readonly ConcurrentDictionary<SendTimeoutPipeWriter, byte> _watched = new();
    private readonly long _timeoutMs;
    private readonly Serilog.ILogger _log;
    private readonly Timer _timer;

    public SendWatchdog(TimeSpan timeout, Serilog.ILogger log)
    {
        _timeoutMs = (long)timeout.TotalMilliseconds;
        _log = log;
        var period = TimeSpan.FromMilliseconds(Math.Clamp(_timeoutMs / 4, 50, 1000));
        _timer = new Timer(_ => Check(), null, period, period);
    }

    /// <summary>Wraps <paramref name="connection"/>'s output; dispose the result when the connection ends.</summary>
    public Watch Add(ConnectionContext connection)
    {
        var writer = new SendTimeoutPipeWriter(connection.Transport.Output, connection);
        _watched[writer] = 0;
        return new Watch(this, writer);
    }

    public void Dispose() => _timer.Dispose();

    private void Check()
    {
        var now = Environment.TickCount64;
        foreach (var writer in _watched.Keys)
        {
            var since = writer.WaitingSince;
            if (since == 0 || now - since < _timeoutMs || !_watched.TryRemove(writer, out _))
                continue;
            var connection = writer.Connection;
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
    }

    /// <summary>One connection's watched output.</summary>
    internal readonly struct Watch(SendWatchdog owner, SendTimeoutPipeWriter writer) : IDisposable
    {
        public SendTimeoutPipeWriter Output => writer;

        public void Dispose() => owner._watched.TryRemove(writer, out _);
    }
}
