using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Dispatch.Platform.Hosting;
using Dispatch.Platform.Interop;
using Dispatch.Platform.Net;
using Dispatch.Wire.Interop;
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

    /// <summary>When the connection was accepted (Environment.TickCount64): the prelude's timeout counts from here.</summary>
    public long AcceptedAt { get; init; } = Environment.TickCount64;

    /// <summary>What is left of <paramref name="timeoutMs"/> since the accept (at least 1 ms, so that a spent budget fires at once).</summary>
    public int Remaining(int timeoutMs) => (int)Math.Max(1, timeoutMs - (Environment.TickCount64 - AcceptedAt));
}

/// <summary>
/// One listening socket's accept loop and what every connection needs before its protocol: a pooled
/// buffer, reads through the dispatcher's own epoll set (so that a socket handed to a worker leaves no
/// registration behind), and the PROXY protocol header from trusted load balancers.
/// </summary>
/// <remarks>
/// A connection holds no buffer of ours until its prelude (ClientHello, request head) can be read whole: until then its
/// bytes stay queued in the kernel, peeked (<c>MSG_PEEK</c>) into a scratch buffer that is given back before waiting,
/// and the socket's <c>SO_RCVLOWAT</c> is set to the length the prelude still needs, so that epoll wakes us only when
/// that much has arrived (or the client closes). Ten thousand partial ClientHellos or slowloris heads thus cost their
/// sockets and a small wait each, not a 32 KiB buffer each (which the GC then kept as heap after the flood).
/// </remarks>
internal abstract class Frontend
{
    // recv(2) flag: look at queued bytes without consuming them.
    private const int MsgPeek = 0x2;
    private readonly TrustedProxies _proxies;
    private readonly ConnectionGauge _inFlight = new();
    private long _nextConnection;

    /// <summary>This listener as metrics name it, e.g. "tls 127.0.0.1:8443".</summary>
    public abstract string Name { get; }

    /// <summary>Connections accepted so far.</summary>
    public long Accepted => Interlocked.Read(ref _nextConnection);

    protected Frontend(Socket listener, string localName, TrustedProxies proxies, ReadinessPoller poller, ILogger log)
    {
        ListenerOptions.Apply(listener); // as the master did: the same values (a listener of a test has them here first)
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

    /// <summary>The budget of lines about single connections shared by the dispatcher's listeners (null: every line).</summary>
    public ConnectionLogBudget? ConnectionLog { get; init; }

    /// <summary>Whether a line about one connection (refused, malformed, failed) may be written now (<see cref="ConnectionLog"/>).</summary>
    protected bool MayLogConnection() => ConnectionLog?.Allow() ?? true;

    /// <summary>Connections being read, routed or (for terminated TLS) proxied.</summary>
    public int InFlight => _inFlight.Open;

    /// <summary>The most connections in flight at once since the last call; from then on, the count now.</summary>
    public int TakePeak() => _inFlight.TakePeak();

    /// <summary>Calls <paramref name="wake"/> on each connection that finds none in flight here (<see cref="ConnectionGauge.Busy"/>).</summary>
    public void OnFirstConnection(Action wake) => _inFlight.Busy = wake;

    /// <summary>Buffer size for the first bytes of a connection (request head, ClientHello), without the PROXY header.</summary>
    protected abstract int PreludeSize { get; }

    /// <summary>How long the first bytes (and any PROXY header) may take.</summary>
    protected abstract int PreludeTimeoutMs { get; }

    /// <summary>
    /// Accepts connections on a thread of its own until <paramref name="stopping"/> fires; the task ends with the thread.
    /// </summary>
    /// <remarks>
    /// The thread sleeps in poll(2) on the listening socket and takes every queued connection with accept4(2), non-blocking
    /// at once (no fcntl), then starts its work there: a plain-HTTP request head that is already there is read, routed
    /// and handed to a worker before the next accept, with no hand-over between threads. Through the runtime's socket
    /// engine each connection that found the accept waiting cost two: its epoll thread woke, then woke a thread of the
    /// pool to run the accept's continuation (docs/operations.md, "A new connection's system calls"). The listening socket
    /// is never in the runtime's epoll set; it is non-blocking, as .NET's accept made it (the flag is shared with the
    /// master and, during an upgrade, with the next dispatcher).
    /// </remarks>
    public Task RunAsync(CancellationToken stopping) =>
        // ObjectDisposedException: the listener was closed before the loop began.
        DedicatedThread.Run("accept", () => AcceptLoop(stopping), static e => e is ObjectDisposedException);

    /// <summary>
    /// How long the accept thread sleeps in poll(2) at most: its stop wakes it at once (an eventfd), so this bounds only
    /// how long it takes to notice that its listener was closed without a stop (the loop holds the listener's handle
    /// while it accepts, never while it sleeps, so that a close never waits for it).
    /// </summary>
    private const int AcceptPollMs = 1000;

    private unsafe void AcceptLoop(CancellationToken stopping)
    {
        var wake = Libc.EventFd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
        if (wake < 0)
            SysCallException.ThrowLast("eventfd");
        try
        {
            using var registration = stopping.UnsafeRegister(static state => Wake((int)state!), wake);
            var handle = Listener.SafeHandle;
            var bound = Listener.LocalEndPoint as IPEndPoint;
            var address = stackalloc byte[128];
            var fds = stackalloc WireLibc.PollFd[2];
            long failures = 0;
            long lastFailure = 0;
            var first = true;
            while (!stopping.IsCancellationRequested)
            {
                // Held while the raw descriptor is used: its number cannot go to another file meanwhile.
                var held = false;
                int listener, fd, errno;
                uint length = 128;
                try
                {
                    handle.DangerousAddRef(ref held);
                    listener = (int)handle.DangerousGetHandle();
                    if (first)
                    {
                        // Non-blocking, so that an accept never sleeps where the stop cannot wake it (another process
                        // sharing the socket may take the connection poll announced). The flag is the open file's, shared
                        // with the master and the next dispatcher; .NET's own accept set it the same way.
                        var flags = Libc.Fcntl(listener, Libc.F_GETFL, 0);
                        if (flags >= 0 && (flags & Libc.O_NONBLOCK) == 0)
                            Libc.Fcntl(listener, Libc.F_SETFL, flags | Libc.O_NONBLOCK);
                        first = false;
                    }

                    fd = Libc.Accept4(listener, address, &length, Libc.SOCK_CLOEXEC | Libc.SOCK_NONBLOCK);
                    errno = fd < 0 ? Libc.LastError : 0;
                }
                catch (ObjectDisposedException)
                {
                    return; // the listener was closed
                }
                finally
                {
                    if (held)
                        handle.DangerousRelease();
                }

                if (fd >= 0)
                {
                    if (failures > 0 && Environment.TickCount64 - lastFailure > 5000)
                    {
                        Log.Information("accept on {Listener} works again, after {Failures} failed attempts", LocalName, failures);
                        failures = 0;
                    }

                    Socket client;
                    try
                    {
                        client = SocketOf(fd, bound, address, length);
                    }
                    catch (Exception e) when (e is SocketException or ArgumentException or IOException)
                    {
                        // Not a socket .NET can use (never seen): this connection is dropped (SocketOf closed it), the loop goes on.
                        Log.Warning("accept on {Listener}: a connection was dropped: {Reason}", LocalName, e.Message);
                        continue;
                    }

                    _ = RunOneAsync(client, (ulong)Interlocked.Increment(ref _nextConnection));
                    continue;
                }

                if (errno is Libc.EINTR or Libc.ECONNABORTED)
                    continue;
                var timeout = AcceptPollMs;
                if (errno != Libc.EAGAIN)
                {
                    // EMFILE and friends: say so once and keep trying (after a breath, not a spin); the connections wait in
                    // the listening socket's queue meanwhile. An episode ends after 5 s without a failure.
                    lastFailure = Environment.TickCount64;
                    if (failures++ == 0)
                        Log.Warning("accept on {Listener} failed: {Reason}; retrying every 50 ms (said once until it works again)", LocalName, Libc.Describe(errno));
                    timeout = 50;
                }

                fds[0] = new WireLibc.PollFd { Fd = timeout == AcceptPollMs ? listener : -1, Events = Libc.POLLIN };
                fds[1] = new WireLibc.PollFd { Fd = wake, Events = Libc.POLLIN };
                Libc.Poll(fds, 2, timeout);
            }
        }
        finally
        {
            Libc.Close(wake);
        }
    }

    private static unsafe void Wake(int eventFd)
    {
        ulong one = 1;
        Libc.Write(eventFd, (byte*)&one, sizeof(ulong));
    }

    /// <summary>The socket of a connection accept4(2) gave: made as .NET's accept makes it (<see cref="KnownSocket.Accepted"/>).</summary>
    private unsafe Socket SocketOf(int fd, IPEndPoint? bound, byte* address, uint length)
    {
        var handle = new SafeSocketHandle(fd, ownsHandle: true);
        try
        {
            if (bound is not null && KnownSocket.EndPointOf(address, length) is { } client && KnownSocket.Accepted(handle, bound, client, Log) is { } socket)
                return socket;
            return new Socket(handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private async Task RunOneAsync(Socket client, ulong id)
    {
        _inFlight.Enter();
        var fd = (int)client.SafeHandle.DangerousGetHandle();
        byte[]? buffer = null;
        IPAddress? admitted = null;
        var counted = false;
        try
        {
            // Non-blocking since accept4 (SOCK_NONBLOCK), here and in the worker it is handed to (the flag is the open file's).
            var accepted = Environment.TickCount64;
            var peer = client.RemoteEndPoint as IPEndPoint;
            ConnectionStart? start = null;
            if (peer is not null && !_proxies.IsEmpty && _proxies.Contains(peer.Address))
            {
                buffer = KeptArrayPool.Instance.Rent(PreludeSize + ProxyProtocol.MaxV2);
                start = await ReadProxyHeaderAsync(new ConnectionStart { Fd = fd, Buffer = buffer, Client = peer, AcceptedAt = accepted }, id).ConfigureAwait(false);
                if (start is null)
                    return;
            }

            var address = (start?.Client ?? peer)?.Address;
            if (Limits is not null)
            {
                admitted = address;
                var refusal = Limits.TryAdmit(admitted);
                if (refusal != ClientLimits.Refusal.None)
                {
                    RefuseOverLimit(client, fd, refusal == ClientLimits.Refusal.PerAddress);
                    return;
                }

                counted = true;
            }

            // From here every wait for the client ends in this connection's turn by its address (ConnectionTurns).
            Poller.Track(fd, address);
            if (start is null)
            {
                if (!await AwaitPreludeAsync(client, fd, accepted).ConfigureAwait(false) && !HandleOnAcceptLoop)
                {
                    // The prelude was there at once, and this connection's work is long (a handshake): it leaves the
                    // accept loop for the thread pool, as a wait would have made it, in its turn.
                    if (Poller.Turns is { } turns)
                        await turns.Yield(address);
                    else
                        await Task.Yield();
                }

                buffer = KeptArrayPool.Instance.Rent(PreludeSize + ProxyProtocol.MaxV2);
                start = new ConnectionStart { Fd = fd, Buffer = buffer, Client = peer, AcceptedAt = accepted };
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
            if (buffer is not null)
                KeptArrayPool.Instance.Return(buffer);
            client.Dispose();
            _inFlight.Leave();
        }
    }

    /// <summary>
    /// Whether a connection whose prelude is already there when it is accepted is handled on the accept loop itself, to
    /// its hand-off (short work: a request head), rather than on the thread pool (a handshake). Either way it skips
    /// the wait through the epoll set.
    /// </summary>
    protected abstract bool HandleOnAcceptLoop { get; }

    /// <summary>
    /// Waits, holding no buffer, until the prelude can be read whole (by <see cref="PreludeNeeds"/>), or can be judged
    /// (invalid, too long to keep peeking), or the client closed, or the prelude's time is up: in every case the
    /// protocol's own read loop then takes over and reports it as before. <c>SO_RCVLOWAT</c> is back at 1 on return,
    /// since the descriptor may go on to a worker. Returns whether it waited: a prelude already queued at the accept
    /// (a flood's ramp, or any client whose first bytes followed its handshake at once) costs no registration, no
    /// wake of the poller's thread and no work item queued behind the others (docs/floods.md).
    /// </summary>
    private async Task<bool> AwaitPreludeAsync(Socket client, int fd, long accepted)
    {
        var lowered = false;
        var waited = false;
        var first = true;
        try
        {
            var asked = 1;
            while (true)
            {
                int queued, needs;
                if (first && (queued = PeekPrelude(fd, out needs)) != -Libc.EAGAIN)
                {
                    // The first look, before any wait, found something queued already (or the end).
                    first = false;
                }
                else
                {
                    first = false;
                    var remaining = PreludeTimeoutMs - (Environment.TickCount64 - accepted);
                    if (remaining <= 0)
                        return waited;
                    waited = true;
                    using (var timeout = new CancellationTokenSource((int)remaining))
                    {
                        try
                        {
                            await Poller.WaitReadableAsync(fd, timeout.Token).ConfigureAwait(false);
                        }
                        catch (OperationCanceledException)
                        {
                            return waited;
                        }
                    }

                    queued = PeekPrelude(fd, out needs);
                }

                // Nothing (closed, an error), or less than was asked for (woken by the client's FIN or an error), or
                // enough: the read loop decides. Otherwise wait until what the prelude needs has arrived.
                if (queued < asked || needs <= queued || needs > PreludeSize)
                    return waited;
                asked = needs;
                client.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReceiveLowWater, asked);
                lowered = true;
            }
        }
        finally
        {
            if (lowered)
                client.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReceiveLowWater, 1);
        }
    }

    /// <summary>The bytes queued on <paramref name="fd"/> (peeked, not consumed; 0 or less: none) and what the prelude needs of them.</summary>
    private int PeekPrelude(int fd, out int needs)
    {
        var scratch = KeptArrayPool.Instance.Rent(PreludeSize);
        try
        {
            var n = RecvNow(fd, scratch.AsSpan(0, PreludeSize), MsgPeek);
            needs = n > 0 ? PreludeNeeds(scratch.AsSpan(0, n)) : 0;
            return n;
        }
        finally
        {
            KeptArrayPool.Instance.Return(scratch);
        }
    }

    /// <summary>
    /// How many bytes from the start of the connection the prelude needs before it can progress, given what is queued:
    /// at most <paramref name="queued"/>'s length when what is queued should be read now (complete, invalid, or more
    /// than is worth peeking again and again).
    /// </summary>
    protected abstract int PreludeNeeds(ReadOnlySpan<byte> queued);

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
                if (MayLogConnection())
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
                    if (MayLogConnection())
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
            var n = RecvNow(fd, into.Span, 0);
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

    private static unsafe int RecvNow(int fd, Span<byte> into, int flags)
    {
        fixed (byte* p = into)
        {
            while (true)
            {
                var n = Libc.Recv(fd, p, (nuint)into.Length, Libc.MSG_DONTWAIT | flags);
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
