using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Dispatch.Worker.Http;

/// <summary>
/// A plain HTTP/1 connection as Kestrel sees it, except that a client's half-close (a FIN after its request,
/// as <c>nc -N</c> or <c>shutdown(SHUT_WR)</c> sends) does not end the connection: the socket transport fires
/// <see cref="ConnectionContext.ConnectionClosed"/> when its receive side ends, and Kestrel would then abort the
/// response it is writing. Here that signal is passed on only when the client is gone for both directions (the
/// socket is no longer in CLOSE_WAIT: a reset, or not TCP). Otherwise the response is written and the connection
/// then ends as usual (the next read sees the end of the input); a client that is really gone makes the write fail,
/// which aborts the connection, and the send timeout bounds a write that makes no progress.
/// A FIN and a full close look the same to the server until it writes, so a CGI script or a proxied request (which
/// may stay silent for long) treats the end of the client's input as the client leaving, as nginx does by default:
/// <see cref="AbortOnInputEnd"/> aborts such a request when it happens.
/// </summary>
internal sealed class HalfCloseConnectionContext : ConnectionContext
{
    private const int TcpCloseWait = 8;
    private readonly ConnectionContext _inner;
    private readonly CancellationTokenSource _closed = new();
    private readonly HalfClosedFeature _feature = new();
    private readonly CancellationTokenRegistration _registration;

    public HalfCloseConnectionContext(ConnectionContext inner)
    {
        _inner = inner;
        inner.Features.Set(_feature);
        _registration = inner.ConnectionClosed.UnsafeRegister(static state => ((HalfCloseConnectionContext)state!).OnInnerClosed(), this);
    }

    public override IDuplexPipe Transport
    {
        get => _inner.Transport;
        set => _inner.Transport = value;
    }

    public override string ConnectionId
    {
        get => _inner.ConnectionId;
        set => _inner.ConnectionId = value;
    }

    public override IFeatureCollection Features => _inner.Features;

    public override IDictionary<object, object?> Items
    {
        get => _inner.Items;
        set => _inner.Items = value;
    }

    public override CancellationToken ConnectionClosed
    {
        get => _closed.Token;
        set => throw new NotSupportedException("the connection's closed token belongs to its transport");
    }

    public override EndPoint? LocalEndPoint
    {
        get => _inner.LocalEndPoint;
        set => _inner.LocalEndPoint = value;
    }

    public override EndPoint? RemoteEndPoint
    {
        get => _inner.RemoteEndPoint;
        set => _inner.RemoteEndPoint = value;
    }

    public override void Abort(ConnectionAbortedException abortReason)
    {
        _inner.Abort(abortReason);
        Close();
    }

    public override void Abort()
    {
        _inner.Abort();
        Close();
    }

    public override async ValueTask DisposeAsync()
    {
        // Kestrel disposes the transport's own context; this one only lets go of its registration and token.
        await _registration.DisposeAsync().ConfigureAwait(false);
        _closed.Dispose();
        _feature.Ended.Dispose();
        await base.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>True when the peer has only shut down its sending side: we may still send (TCP state CLOSE_WAIT).</summary>
    internal static bool PeerHalfClosed(Socket? socket)
    {
        // Closed already (the transport disposes its socket as it ends): no state to ask for, and asking would throw
        // ObjectDisposedException, once per connection that a client resets mid-response (docs/operations.md, "Where
        // the CPU goes"). The catch below stays for a close that comes between the two.
        if (socket is null || socket.ProtocolType != ProtocolType.Tcp || socket.SafeHandle.IsClosed)
            return false;
        Span<byte> info = stackalloc byte[8];
        try
        {
            socket.GetRawSocketOption(6 /* IPPROTO_TCP */, 11 /* TCP_INFO */, info);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            return false;
        }

        return info[0] == TcpCloseWait;
    }

    /// <summary>
    /// For a request that may stay silent (CGI, proxy): aborts it when the client's input ends on a half-closed
    /// connection (at once if it already has). Null on other connections, whose abort comes from Kestrel itself.
    /// </summary>
    public static IDisposable? AbortOnInputEnd(Microsoft.AspNetCore.Http.HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (context.Features.Get<HalfClosedFeature>() is not { } feature)
            return null;
        try
        {
            return feature.Ended.Token.UnsafeRegister(static state => ((Microsoft.AspNetCore.Http.HttpContext)state!).Abort(), context);
        }
        catch (ObjectDisposedException)
        {
            return null;
        }
    }

    private void OnInnerClosed()
    {
        if (PeerHalfClosed(_inner.Features.Get<IConnectionSocketFeature>()?.Socket))
        {
            try
            {
                _feature.Ended.Cancel();
            }
            catch (ObjectDisposedException)
            {
            }
        }
        else
        {
            Close();
        }
    }

    /// <summary>Fires when the client's input ends on a connection whose response may still be sent.</summary>
    internal sealed class HalfClosedFeature
    {
        public CancellationTokenSource Ended { get; } = new();
    }

    private void Close()
    {
        try
        {
            _closed.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // Already disposed with the connection.
        }
    }
}
