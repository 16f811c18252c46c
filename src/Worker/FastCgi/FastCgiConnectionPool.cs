using System.Net.Sockets;
using Dispatch.Worker.Http;

namespace Dispatch.Worker.FastCgi;

/// <summary>
/// Idle connections to one FastCGI application (one Unix socket), at most <see cref="MaxIdle"/> kept; a connection is
/// in use by one request at a time and returns here only after a request that ended cleanly (any error discards it).
/// Connections the application closed while idle (php-fpm's <c>ondemand</c> children exit after their idle timeout) are
/// noticed when taken and dropped.
/// </summary>
internal sealed class FastCgiConnectionPool(string socketPath, TimeSpan connectTimeout) : IDisposable
{
    public const int MaxIdle = 16;

    private readonly Stack<FastCgiConnection> _idle = new();
    private readonly Lock _lock = new();
    private readonly ProxyUpstream _upstream = new("unix:" + socketPath, new UnixDomainSocketEndPoint(socketPath), "http://localhost");
    private bool _disposed;

    public string SocketPath { get; } = socketPath;

    /// <summary>Idle connections now (tests).</summary>
    public int IdleCount
    {
        get
        {
            lock (_lock)
            {
                return _idle.Count;
            }
        }
    }

    /// <summary>An idle connection that still looks usable, or a new one (<see cref="UpstreamConnectException"/> on failure).</summary>
    public async Task<FastCgiConnection> RentAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            FastCgiConnection? idle;
            lock (_lock)
            {
                _idle.TryPop(out idle);
            }

            if (idle is null)
            {
                break;
            }

            if (idle.LooksIdle())
            {
                idle.Reused = true;
                return idle;
            }

            idle.Dispose();
        }

        return await ConnectAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>A new connection, never a pooled one (the retry after a pooled one failed at once).</summary>
    public Task<FastCgiConnection> ConnectAsync(CancellationToken cancellationToken) =>
        FastCgiConnection.ConnectAsync(_upstream, connectTimeout, cancellationToken);

    /// <summary>Keeps a connection whose request ended cleanly, or closes it when the pool is full or gone.</summary>
    public void Return(FastCgiConnection connection)
    {
        ArgumentNullException.ThrowIfNull(connection);
        lock (_lock)
        {
            if (!_disposed && _idle.Count < MaxIdle)
            {
                _idle.Push(connection);
                return;
            }
        }

        connection.Dispose();
    }

    /// <summary>Closes every idle connection (the application restarted, or the worker stops).</summary>
    public void Clear()
    {
        lock (_lock)
        {
            while (_idle.TryPop(out var connection))
            {
                connection.Dispose();
            }
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
        }

        Clear();
    }
}
