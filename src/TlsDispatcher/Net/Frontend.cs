using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Dispatch.Protocol.Interop;
using Serilog;

namespace Dispatch.TlsDispatcher.Net;

/// <summary>What a frontend knows when it starts on a connection.</summary>
internal sealed class ConnectionStart
{
    public required int Fd { get; init; }

    /// <summary>Pooled; the first <see cref="Filled"/> bytes are the client's (after any PROXY header).</summary>
    public required byte[] Buffer { get; init; }

    public int Filled { get; set; }

    /// <summary>The client: the socket's peer, or what a trusted PROXY header announced.</summary>
    public required IPEndPoint? Client { get; init; }

    public string ClientText => Client?.ToString() ?? "-";
}

/// <summary>
/// One listening socket's accept loop and what every connection needs before its protocol: a pooled
/// buffer, reads through the dispatcher's own epoll set (so that a socket handed to a worker leaves no
/// registration behind), and the PROXY protocol header from trusted load balancers.
/// </summary>
internal abstract class Frontend
{
    private readonly TrustedProxies _proxies;
    private int _inFlight;
    private long _nextConnection;

    /// <summary>This listener as metrics name it, e.g. "tls 127.0.0.1:8443".</summary>
    public abstract string Name { get; }

    /// <summary>Connections accepted so far.</summary>
    public long Accepted => Interlocked.Read(ref _nextConnection);

    protected Frontend(Socket listener, string localName, TrustedProxies proxies, ReadinessPoller poller, ILogger log)
    {
        Listener = listener;
        LocalName = localName;
        _proxies = proxies;
        Poller = poller;
        Log = log;
    }

    protected Socket Listener { get; }

    protected string LocalName { get; }

    protected ReadinessPoller Poller { get; }

    protected ILogger Log { get; }

    /// <summary>The client limits shared by the dispatcher's listeners (null: none).</summary>
    public ClientLimits? Limits { get; init; }

    /// <summary>Connections being read, routed or (for terminated TLS) proxied.</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Buffer size for the first bytes of a connection (request head, ClientHello), without the PROXY header.</summary>
    protected abstract int PreludeSize { get; }

    /// <summary>How long the first bytes (and any PROXY header) may take.</summary>
    protected abstract int PreludeTimeoutMs { get; }

    public async Task RunAsync(CancellationToken stopping)
    {
        long failures = 0;
        long lastFailure = 0;
        while (!stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await Listener.AcceptAsync(stopping).ConfigureAwait(false);
                if (failures > 0 && Environment.TickCount64 - lastFailure > 5000)
                {
                    Log.Information("accept on {Listener} works again, after {Failures} failed attempts", LocalName, failures);
                    failures = 0;
                }
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                // EMFILE and friends: say so once and keep trying (after a breath, not a spin); the connections wait in
                // the listening socket's queue meanwhile.
                // An episode ends after 5 s without a failure.
                lastFailure = Environment.TickCount64;
                if (failures++ == 0)
                    Log.Warning("accept on {Listener} failed: {Reason}; retrying every 50 ms (said once until it works again)", LocalName, e.Message);
                await Task.Delay(50, CancellationToken.None).ConfigureAwait(false);
                continue;
            }

            _ = RunOneAsync(client, (ulong)Interlocked.Increment(ref _nextConnection));
        }
    }

    private async Task RunOneAsync(Socket client, ulong id)
    {
        Interlocked.Increment(ref _inFlight);
        var fd = (int)client.SafeHandle.DangerousGetHandle();
        var buffer = ArrayPool<byte>.Shared.Rent(PreludeSize + ProxyProtocol.MaxV2);
        IPAddress? admitted = null;
        var counted = false;
        try
        {
            Libc.Fcntl(fd, Libc.F_SETFL, Libc.Fcntl(fd, Libc.F_GETFL, 0) | Libc.O_NONBLOCK);
            var peer = client.RemoteEndPoint as IPEndPoint;
            var start = new ConnectionStart { Fd = fd, Buffer = buffer, Client = peer };
            if (peer is not null && !_proxies.IsEmpty && _proxies.Contains(peer.Address))
            {
                start = await ReadProxyHeaderAsync(start, id).ConfigureAwait(false);
                if (start is null)
                    return;
            }

            if (Limits is not null)
            {
                admitted = start.Client?.Address;
                var refusal = Limits.TryAdmit(admitted);
                if (refusal != ClientLimits.Refusal.None)
                {
                    RefuseOverLimit(client, fd, refusal == ClientLimits.Refusal.PerAddress);
                    return;
                }

                counted = true;
            }

            await HandleAsync(client, id, start).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException or OperationCanceledException or SysCallException)
        {
            Log.Debug("Connection {ConnectionId} ended: {Reason}", id, e.Message);
        }
        catch (Exception e)
        {
            Log.Error(e, "Connection {ConnectionId} failed unexpectedly", id);
        }
        finally
        {
            if (counted)
                Limits!.Release(admitted);
            Poller.Remove(fd);
            ArrayPool<byte>.Shared.Return(buffer);
            client.Dispose();
            Interlocked.Decrement(ref _inFlight);
        }
    }

    /// <summary>
    /// A connection over the client limits (logged in summary by <see cref="ClientLimits"/>, not one by one). By
    /// default it is reset; plain HTTP answers 429 or 503 first.
    /// </summary>
    protected virtual void RefuseOverLimit(Socket client, int fd, bool perAddress)
    {
        try
        {
            client.LingerState = new LingerOption(true, 0);
        }
        catch (SocketException)
        {
        }
    }

    /// <summary>A trusted balancer must open with a PROXY header; its source becomes the client.</summary>
    private async Task<ConnectionStart?> ReadProxyHeaderAsync(ConnectionStart start, ulong id)
    {
        using var timeout = new CancellationTokenSource(PreludeTimeoutMs);
        var filled = 0;
        while (true)
        {
            int n;
            try
            {
                n = await ReceiveAsync(start.Fd, start.Buffer.AsMemory(filled, ProxyProtocol.MaxV2 - filled), timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Log.Information("Connection {ConnectionId} from {Peer}: no PROXY header in time", id, start.Client);
                return null;
            }

            if (n == 0)
                return null;
            filled += n;
            switch (ProxyProtocol.Parse(start.Buffer.AsSpan(0, filled), out var source, out var consumed, out var error))
            {
                case ProxyHeaderStatus.Ok:
                    start.Buffer.AsSpan(consumed, filled - consumed).CopyTo(start.Buffer);
                    return new ConnectionStart { Fd = start.Fd, Buffer = start.Buffer, Filled = filled - consumed, Client = source ?? start.Client };
                case ProxyHeaderStatus.Invalid:
                    Log.Information("Connection {ConnectionId} from trusted proxy {Peer} refused: {Reason}", id, start.Client, error);
                    return null;
            }

            if (filled == ProxyProtocol.MaxV2)
                return null;
        }
    }

    /// <summary>
    /// Reads what is available (waiting for readability through the dispatcher's epoll set): the byte
    /// count, 0 at end of stream. Throws <see cref="OperationCanceledException"/> when the token fires.
    /// </summary>
    protected async Task<int> ReceiveAsync(int fd, Memory<byte> into, CancellationToken cancellationToken)
    {
        while (true)
        {
            var n = RecvNow(fd, into.Span);
            if (n >= 0)
                return n;
            if (-n != Libc.EAGAIN)
                throw new SysCallException("recv", -n);
            await Poller.WaitReadableAsync(fd, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Sends all of <paramref name="bytes"/> (waiting for writability through the dispatcher's epoll set, never the
    /// runtime's, so the descriptor can still be handed away). Throws <see cref="OperationCanceledException"/> when
    /// the token fires.
    /// </summary>
    protected async Task SendAllAsync(int fd, ReadOnlyMemory<byte> bytes, CancellationToken cancellationToken)
    {
        while (!bytes.IsEmpty)
        {
            var n = SendNow(fd, bytes.Span);
            if (n >= 0)
            {
                bytes = bytes[n..];
                continue;
            }

            if (-n != Libc.EAGAIN)
                throw new SysCallException("send", -n);
            await Poller.WaitWritableAsync(fd, cancellationToken).ConfigureAwait(false);
        }
    }

    private static unsafe int SendNow(int fd, ReadOnlySpan<byte> bytes)
    {
        fixed (byte* p = bytes)
        {
            while (true)
            {
                var n = Libc.Send(fd, p, (nuint)bytes.Length, Libc.MSG_DONTWAIT | Libc.MSG_NOSIGNAL);
                if (n >= 0)
                    return (int)n;
                var errno = Libc.LastError;
                if (errno != Libc.EINTR)
                    return -errno;
            }
        }
    }

    private static unsafe int RecvNow(int fd, Span<byte> into)
    {
        fixed (byte* p = into)
        {
            while (true)
            {
                var n = Libc.Recv(fd, p, (nuint)into.Length, Libc.MSG_DONTWAIT);
                if (n >= 0)
                    return (int)n;
                var errno = Libc.LastError;
                if (errno != Libc.EINTR)
                    return -errno;
            }
        }
    }

    /// <summary>Handles one accepted connection; the caller disposes <paramref name="client"/> and returns the buffer afterwards.</summary>
    protected abstract Task HandleAsync(Socket client, ulong id, ConnectionStart start);
}
