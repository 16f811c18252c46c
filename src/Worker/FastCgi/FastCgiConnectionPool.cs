using Dispatch.Wire.Payloads;

namespace Dispatch.Worker.FastCgi;

/// <summary>
/// Idle connections to one FastCGI application (one Unix socket), at most <see cref="MaxIdle"/> kept; a connection is
/// in use by one request at a time and returns here only after a request that ended cleanly (any error discards it).
/// Connections the application closed while idle (php-fpm's <c>ondemand</c> children exit after their idle timeout) are
/// noticed when taken and dropped.
/// </summary>
/// <remarks>
/// php-fpm ties a child to a kept connection until that connection closes: with more connections than children, a
/// request sent on a connection still waiting in php-fpm's backlog would wait for a child that never comes. So when the
/// number of children is known (<paramref name="maxConnections"/>: a spawned php-fpm's <c>pm.max_children</c>), no more
/// connections than that are open at once; further requests wait for one (bounded by the client's patience).
/// </remarks>
internal sealed class FastCgiConnectionPool(string socketPath, TimeSpan connectTimeout, int? maxConnections = null) : IDisposable
{
    public const int MaxIdle = 16;

    private readonly Stack<FastCgiConnection> _idle = new();
    private readonly Lock _lock = new();
    private readonly SemaphoreSlim? _slots = maxConnections is > 0 and var max ? new SemaphoreSlim(max, max) : null;
    private readonly ProxyUpstream _upstream = ProxyUpstream.TryParse("unix:" + socketPath, out var upstream, out var error)
        ? upstream
        : throw new ArgumentException($"FastCGI socket '{socketPath}': {error}", nameof(socketPath));
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
    /// <remarks>Every connection rented is given back exactly once: <see cref="Return"/> or <see cref="Discard"/>.</remarks>
    public async Task<FastCgiConnection> RentAsync(CancellationToken cancellationToken)
    {
        if (_slots is not null)
        {
            await _slots.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        try
        {
            return await TakeAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            ReleaseSlot();
            throw;
        }
    }

    /// <summary>Closes a rented connection (an error, or a request that did not end cleanly); null: its slot only.</summary>
    public void Discard(FastCgiConnection? connection)
    {
        connection?.Dispose();
        ReleaseSlot();
    }

    private async Task<FastCgiConnection> TakeAsync(CancellationToken cancellationToken)
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

    /// <summary>A new connection, never a pooled one, in the slot already held (the retry after a pooled one failed at once).</summary>
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
                ReleaseSlot();
                return;
            }
        }

        connection.Dispose();
        ReleaseSlot();
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

    private void ReleaseSlot()
    {
        try
        {
            _slots?.Release();
        }
        catch (ObjectDisposedException)
        {
            // A request that ended after the worker disposed its pools.
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
        }

        Clear();
        _slots?.Dispose();
    }
}
