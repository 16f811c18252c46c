using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;
using Dispatch.Wire.Interop;

namespace Dispatch.Wire;

/// <summary>A message type with its wire layout: written next to its parser, trailing bytes rejected.</summary>
public interface IWireMessage<TSelf>
    where TSelf : IWireMessage<TSelf>
{
    static abstract MessageType Type { get; }

    /// <summary>
    /// Exactly how many descriptors <paramref name="message"/> carries (for most types a constant; for a
    /// few, a function of the payload, e.g. one per listener named). Any other count is a protocol violation.
    /// </summary>
    static abstract int DescriptorCount(TSelf message);

    void Encode(ref WireWriter writer);

    static abstract TSelf Decode(ref WireReader reader);
}

/// <summary>
/// One end of a SOCK_SEQPACKET socketpair between two Dispatch processes. Datagram layout:
/// <code>
/// u16 type | u8 version | u8 descriptor count | u32 payload length | payload
/// </code>
/// with the descriptors (SCM_RIGHTS) in the control data of the same datagram. Receiving is async
/// (readiness through the runtime's epoll or a waiter of the process's own, then a non-blocking recvmsg); sending is one sendmsg
/// per message, atomic on a SEQPACKET socket, so several threads may send at once.
/// </summary>
public sealed class IpcChannel : IDisposable
{
    public const int HeaderSize = 8;
    public const int MaxDatagram = 65536;
    public const int MaxDescriptors = 16;
    // 2: JailSpec (cgroup, tenant write paths, chroot, landlock), Stop (final), WorkerSetup (pool JSON in a memfd),
    // stats and metrics messages. A child from binaries of another version fails at its first message, saying so.
    // 3: Connection mode HandedTls with the TLS session state appended (TLS 2: the worker runs the record layer).
    // 4: Hello without its own protocol field (this header's version byte is the one checked); every type
    // carries an exact descriptor count.
    // 5: WorkerTraffic (a worker's requests, bytes and durations per vhost), DispatcherStats with the vhosts' traffic
    // in a sealed memfd; a worker's channel half-closed by its dispatcher when it is let go (it may still report).
    public const byte Version = 5;
    private const int EBadF = 9;
    private static readonly int ControlSize = WireLibc.CmsgSpace(MaxDescriptors * sizeof(int));

    private readonly Socket _socket;
    // The descriptor's owner. Every raw use of _fd holds a reference on it (Hold): a Dispose on another thread (a
    // channel whose peer left) then closes the descriptor only after that use, and a use after the Dispose throws
    // ObjectDisposedException instead of reaching whatever descriptor reuses the number (a WorkerReady sent to a
    // disposed dispatcher's channel once went to the very worker it announced, through the socketpair made just after).
    private readonly SafeSocketHandle _handle;
    private readonly int _fd;
    // Rented while messages arrive, returned while the channel waits (ReceiveAsync): a host with thousands of idle
    // workers has thousands of channels in the master and the dispatcher (and two in each worker), and a buffer of
    // MaxDatagram bytes held by each idle one is memory for nothing (docs/coldstart.md, "Density").
    private byte[]? _receiveBuffer;
    private int _disposed;

    // Where ReceiveAsync waits when nothing is queued (null: the runtime's epoll set, through _socket).
    private readonly IReadinessWaiter? _readiness;

    private IpcChannel(int fd, string peer, IReadinessWaiter? readiness = null)
    {
        _fd = fd;
        Peer = peer;
        _readiness = readiness;
        _handle = new SafeSocketHandle(fd, ownsHandle: true);
        _socket = new Socket(_handle);
    }

    /// <summary>Who is at the other end, for log messages ("worker 12 (pool a)").</summary>
    public string Peer { get; set; }

    /// <summary>The raw descriptor (tests forge datagrams on it); valid only while the channel is not disposed.</summary>
    public int Descriptor => _fd;

    /// <summary>True when a message would fit in the peer's queue now (poll POLLOUT, no wait); false once disposed.</summary>
    public unsafe bool Writable
    {
        get
        {
            if (!TryHold())
                return false;
            try
            {
                var pfd = new WireLibc.PollFd { Fd = _fd, Events = WireLibc.POLLOUT };
                return WireLibc.Poll(&pfd, 1, 0) > 0 && (pfd.REvents & WireLibc.POLLOUT) != 0;
            }
            finally
            {
                _handle.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Waits in poll(2) up to <paramref name="timeoutMs"/> for the channel to be readable (a message queued, or the end),
    /// holding the descriptor meanwhile, as every raw use does: a Dispose on another thread wakes the wait (the runtime
    /// shuts the socket down before it closes a descriptor in use) and closes it only after, and a wait after the Dispose
    /// throws instead of polling whatever file reuses the number by then.
    /// </summary>
    /// <returns>1 when readable (or hung up), 0 on timeout, -1 when interrupted (EINTR).</returns>
    /// <exception cref="SysCallException">EBADF: the channel is disposed; or poll(2) failed.</exception>
    public unsafe int PollReadable(int timeoutMs)
    {
        Hold();
        try
        {
            var pfd = new WireLibc.PollFd { Fd = _fd, Events = WireLibc.POLLIN };
            var ready = WireLibc.Poll(&pfd, 1, timeoutMs);
            if (ready < 0 && WireLibc.LastError != WireLibc.EINTR)
                SysCallException.ThrowLast("poll");
            return ready < 0 ? -1 : ready;
        }
        finally
        {
            _handle.DangerousRelease();
        }
    }

    /// <summary>Wraps an inherited or received channel descriptor; the channel owns it from now on.</summary>
    /// <param name="fd">The descriptor.</param>
    /// <param name="peer">Who is at the other end, for log messages.</param>
    /// <param name="readiness">
    /// Where <see cref="ReceiveAsync"/> waits for the next message (null: the runtime's epoll set). The runtime registers a
    /// socket it waits on for reading and writing, edge-triggered, for as long as it is open: every message the peer then
    /// takes from this side's queue is a writable edge, which wakes the runtime's epoll thread and a thread of the pool for
    /// nothing. On the dispatcher's channel to a worker that was once per connection handed over, about a third of the
    /// dispatcher's system calls on short plain-HTTP connections (docs/operations.md, "A new connection's system calls").
    /// A waiter is asked for readability only, and forgets the descriptor after each wait.
    /// </param>
    public static IpcChannel FromDescriptor(int fd, string peer, IReadinessWaiter? readiness = null) => new(fd, peer, readiness);

    /// <summary>A new socketpair: one end as a channel, the other as a raw CLOEXEC descriptor for the peer.</summary>
    public static unsafe IpcChannel CreatePair(string peer, out int peerFd)
    {
        var fds = stackalloc int[2];
        if (WireLibc.SocketPair(WireLibc.AF_UNIX, WireLibc.SOCK_SEQPACKET | WireLibc.SOCK_CLOEXEC, 0, fds) != 0)
            SysCallException.ThrowLast("socketpair");
        peerFd = fds[1];
        return new IpcChannel(fds[0], peer);
    }

    /// <summary>A raw socketpair of the given type, both ends CLOEXEC.</summary>
    public static unsafe (int A, int B) RawPair(int type)
    {
        var fds = stackalloc int[2];
        if (WireLibc.SocketPair(WireLibc.AF_UNIX, type | WireLibc.SOCK_CLOEXEC, 0, fds) != 0)
            SysCallException.ThrowLast("socketpair");
        return (fds[0], fds[1]);
    }

    public void Send<T>(T message, ReadOnlySpan<int> descriptors = default)
        where T : IWireMessage<T> => Send(message, descriptors, wait: true);

    /// <summary>
    /// Sends without waiting: false, with nothing sent, when the peer's queue is full (it is not reading). For the
    /// dispatcher's hand-offs, which must never block on one worker (docs/faults.md).
    /// </summary>
    public bool TrySend<T>(T message, ReadOnlySpan<int> descriptors = default)
        where T : IWireMessage<T> => Send(message, descriptors, wait: false);

    private bool Send<T>(T message, ReadOnlySpan<int> descriptors, bool wait)
        where T : IWireMessage<T>
    {
        if (descriptors.Length != T.DescriptorCount(message))
            throw new WireException($"{T.Type} carries exactly {T.DescriptorCount(message)} descriptors, not {descriptors.Length}");
        var buffer = ArrayPool<byte>.Shared.Rent(MaxDatagram);
        try
        {
            var writer = new WireWriter(buffer.AsSpan(HeaderSize, MaxDatagram - HeaderSize));
            message.Encode(ref writer);
            var length = writer.Length;
            BinaryPrimitives.WriteUInt16LittleEndian(buffer, (ushort)T.Type);
            buffer[2] = Version;
            buffer[3] = (byte)descriptors.Length;
            BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(4), (uint)length);
            return SendRaw(buffer.AsSpan(0, HeaderSize + length), descriptors, wait);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private bool SendRaw(ReadOnlySpan<byte> datagram, ReadOnlySpan<int> descriptors, bool wait)
    {
        Hold();
        try
        {
            return SendHeld(datagram, descriptors, wait);
        }
        finally
        {
            _handle.DangerousRelease();
        }
    }

    private unsafe bool SendHeld(ReadOnlySpan<byte> datagram, ReadOnlySpan<int> descriptors, bool wait)
    {
        var control = stackalloc byte[ControlSize];
        fixed (byte* data = datagram)
        {
            var iov = new WireLibc.IoVec { Base = data, Len = (nuint)datagram.Length };
            var msg = new WireLibc.MsgHdr { Iov = &iov, IovLen = 1 };
            if (descriptors.Length > 0)
            {
                new Span<byte>(control, ControlSize).Clear();
                var cmsg = (WireLibc.CmsgHdr*)control;
                cmsg->Len = (nuint)WireLibc.CmsgLen(descriptors.Length * sizeof(int));
                cmsg->Level = WireLibc.SOL_SOCKET;
                cmsg->Type = WireLibc.SCM_RIGHTS;
                var fdData = (int*)(control + WireLibc.CmsgAlign(sizeof(WireLibc.CmsgHdr)));
                for (var i = 0; i < descriptors.Length; i++)
                    fdData[i] = descriptors[i];
                msg.Control = control;
                msg.ControlLen = (nuint)WireLibc.CmsgSpace(descriptors.Length * sizeof(int));
            }

            var waited = 0;
            while (true)
            {
                var sent = WireLibc.SendMsg(_fd, &msg, WireLibc.MSG_DONTWAIT | WireLibc.MSG_NOSIGNAL);
                if (sent >= 0)
                    return true;
                var errno = WireLibc.LastError;
                if (errno == WireLibc.EINTR)
                    continue;
                if (errno != WireLibc.EAGAIN)
                    throw new SysCallException($"sendmsg to {Peer}", errno);
                if (!wait)
                    return false;
                // The peer is not reading. Wait a bounded time for room, then give up on it.
                if (waited >= 5000)
                    throw new SysCallException($"sendmsg to {Peer} (peer not reading for 5 s)", errno);
                var pfd = new WireLibc.PollFd { Fd = _fd, Events = WireLibc.POLLOUT };
                WireLibc.Poll(&pfd, 1, 100);
                waited += 100;
            }
        }
    }

    /// <summary>
    /// The next message, or null when the peer closed its end. The payload is valid until the next
    /// call. Throws <see cref="WireException"/> on anything malformed (descriptors already closed).
    /// </summary>
    public async ValueTask<IpcMessage?> ReceiveAsync(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            var message = TryReceive(out var wouldBlock);
            if (!wouldBlock)
                return message;
            // Idle: the previous message's payload is no longer valid (this is the next call), so its buffer goes back.
            ReleaseReceiveBuffer();

            if (_readiness is { } readiness)
            {
                await WaitReadableAsync(readiness, cancellationToken).ConfigureAwait(false);
                continue;
            }

            // Zero-byte peek: completes when a datagram (or EOF) is queued, consumes nothing.
            try
            {
                await _socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.Peek, cancellationToken).ConfigureAwait(false);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
                // The peer closed with our messages unread in its queue: an end, as TryReceive reads it too.
                return null;
            }
        }
    }

    /// <summary>
    /// Waits through <paramref name="readiness"/>, holding the descriptor meanwhile, as every raw use does: a Dispose on
    /// another thread wakes the wait (the runtime shuts the socket down before it closes a descriptor in use) and closes
    /// it only after the waiter has forgotten it, so that no registration outlives the descriptor's number.
    /// </summary>
    private async Task WaitReadableAsync(IReadinessWaiter readiness, CancellationToken cancellationToken)
    {
        Hold();
        try
        {
            await readiness.WaitReadableAsync(_fd, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            readiness.Remove(_fd);
            _handle.DangerousRelease();
        }
    }

    /// <summary>
    /// Gives the receive buffer back while the channel is idle, for a receiver that waits on its own (in poll(2), as the
    /// worker's channel thread does) rather than in <see cref="ReceiveAsync"/>, which does this itself: the payload of the
    /// message received last is no longer valid after it.
    /// </summary>
    public void ReleaseReceiveBuffer()
    {
        if (_receiveBuffer is { } idle)
        {
            _receiveBuffer = null;
            ArrayPool<byte>.Shared.Return(idle);
        }
    }

    /// <summary>Blocking receive, for the single-threaded stage before the jailed exec.</summary>
    public unsafe IpcMessage? ReceiveBlocking(int timeoutMs)
    {
        var pfd = new WireLibc.PollFd { Fd = _fd, Events = WireLibc.POLLIN };
        Hold();
        try
        {
            while (true)
            {
                var message = TryReceive(out var wouldBlock);
                if (!wouldBlock)
                    return message;
                var r = WireLibc.Poll(&pfd, 1, timeoutMs);
                if (r == 0)
                    throw new WireException($"no message from {Peer} within {timeoutMs} ms");
                if (r < 0 && WireLibc.LastError != WireLibc.EINTR)
                    SysCallException.ThrowLast("poll");
            }
        }
        finally
        {
            _handle.DangerousRelease();
        }
    }

    private IpcMessage? TryReceive(out bool wouldBlock)
    {
        Hold();
        try
        {
            return TryReceiveHeld(out wouldBlock);
        }
        finally
        {
            _handle.DangerousRelease();
        }
    }

    private unsafe IpcMessage? TryReceiveHeld(out bool wouldBlock)
    {
        wouldBlock = false;
        var control = stackalloc byte[ControlSize];
        nint received;
        WireLibc.MsgHdr msg;
        var buffer = _receiveBuffer ??= ArrayPool<byte>.Shared.Rent(MaxDatagram);
        fixed (byte* data = buffer)
        {
            var iov = new WireLibc.IoVec { Base = data, Len = (nuint)MaxDatagram };
            msg = new WireLibc.MsgHdr { Iov = &iov, IovLen = 1, Control = control, ControlLen = (nuint)ControlSize };
            do
            {
                received = WireLibc.RecvMsg(_fd, &msg, WireLibc.MSG_DONTWAIT | WireLibc.MSG_CMSG_CLOEXEC);
            }
            while (received < 0 && WireLibc.LastError == WireLibc.EINTR);
        }

        if (received < 0)
        {
            var errno = WireLibc.LastError;
            if (errno == WireLibc.EAGAIN)
            {
                wouldBlock = true;
                return null;
            }

            if (errno == 104 /* ECONNRESET */)
                return null;
            throw new SysCallException($"recvmsg from {Peer}", errno);
        }

        var fds = CollectDescriptors(&msg);
        try
        {
            if (received == 0 && fds.Count == 0)
                return null;
            // The kernel truncates the descriptors when this process has no free descriptor left (RLIMIT_NOFILE): not the
            // peer's fault. The message is returned with DescriptorsLost set (its descriptors were closed by the kernel), so
            // the receiver can drop that one message and go on; handled nowhere, it fails to decode as before.
            var lost = (msg.Flags & WireLibc.MSG_CTRUNC) != 0 && AtDescriptorLimit();
            if ((msg.Flags & WireLibc.MSG_CTRUNC) != 0 && !lost)
                throw new WireException($"{Peer} sent more descriptors than any message may carry");
            if ((msg.Flags & WireLibc.MSG_TRUNC) != 0)
                throw new WireException($"{Peer} sent a datagram over {MaxDatagram} bytes");
            if (received < HeaderSize)
                throw new WireException($"{Peer} sent a {received}-byte datagram, shorter than the {HeaderSize}-byte header");
            var type = (MessageType)BinaryPrimitives.ReadUInt16LittleEndian(buffer);
            var version = buffer[2];
            int declared = buffer[3];
            var length = BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(4));
            if (version != Version)
                throw new WireException($"{Peer} speaks protocol version {version}, this side {Version}");
            if (length != received - HeaderSize)
                throw new WireException($"{Peer} declared {length} payload bytes but sent {received - HeaderSize}");
            if (declared != fds.Count && !lost)
                throw new WireException($"{Peer} declared {declared} descriptors with {type} but {fds.Count} arrived");
            var message = new IpcMessage(type, buffer.AsMemory(HeaderSize, (int)length), fds) { DescriptorsLost = lost };
            fds = ReceivedDescriptors.Empty;
            return message;
        }
        finally
        {
            fds.Dispose();
        }
    }

    /// <summary>True when this process cannot open one more descriptor (EMFILE), tried with a duplicate of the channel's.</summary>
    private bool AtDescriptorLimit()
    {
        var probe = WireLibc.Fcntl(_fd, WireLibc.F_DUPFD_CLOEXEC, 0);
        if (probe >= 0)
        {
            WireLibc.Close(probe);
            return false;
        }

        return WireLibc.LastError == WireLibc.EMFILE;
    }

    private static unsafe ReceivedDescriptors CollectDescriptors(WireLibc.MsgHdr* msg)
    {
        if (msg->ControlLen < (nuint)sizeof(WireLibc.CmsgHdr))
            return ReceivedDescriptors.Empty;
        var list = new List<int>(1);
        var offset = 0;
        var control = (byte*)msg->Control;
        while (offset + sizeof(WireLibc.CmsgHdr) <= (int)msg->ControlLen)
        {
            var cmsg = (WireLibc.CmsgHdr*)(control + offset);
            if ((int)cmsg->Len < sizeof(WireLibc.CmsgHdr) || offset + (int)cmsg->Len > (int)msg->ControlLen)
                break;
            if (cmsg->Level == WireLibc.SOL_SOCKET && cmsg->Type == WireLibc.SCM_RIGHTS)
            {
                var count = ((int)cmsg->Len - WireLibc.CmsgAlign(sizeof(WireLibc.CmsgHdr))) / sizeof(int);
                var fdData = (int*)((byte*)cmsg + WireLibc.CmsgAlign(sizeof(WireLibc.CmsgHdr)));
                for (var i = 0; i < count; i++)
                    list.Add(fdData[i]);
            }

            offset += WireLibc.CmsgAlign((int)cmsg->Len);
        }

        return new ReceivedDescriptors(list);
    }

    /// <summary>Takes a reference on the descriptor (release with DangerousRelease).</summary>
    /// <exception cref="SysCallException">EBADF: the channel is disposed (its descriptor number may name another file now),
    /// as a send or receive on a closed descriptor fails.</exception>
    private void Hold()
    {
        if (!TryHold())
            throw new SysCallException($"channel to {Peer} (closed)", EBadF);
    }

    private bool TryHold()
    {
        try
        {
            var added = false;
            _handle.DangerousAddRef(ref added);
            return added;
        }
        catch (ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>
    /// Sends nothing more (shutdown(SHUT_WR)): the peer's next receive finds the end of the channel, and it may still
    /// send what it has to say until it closes its end. False if the channel was disposed or is already shut.
    /// </summary>
    public bool ShutdownSend()
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Send);
            return true;
        }
        catch (Exception e) when (e is ObjectDisposedException or SocketException)
        {
            return false;
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
            _socket.Dispose();
    }
}

/// <summary>Descriptors that arrived with a message; every one not taken is closed on dispose.</summary>
public sealed class ReceivedDescriptors : IDisposable
{
    public static readonly ReceivedDescriptors Empty = new([]);
    private readonly List<int> _fds;

    public ReceivedDescriptors(List<int> fds) => _fds = fds;

    public int Count => _fds.Count;

    /// <summary>Takes ownership of descriptor <paramref name="index"/>; the caller must close it.</summary>
    public int Take(int index)
    {
        var fd = _fds[index];
        if (fd < 0)
            throw new WireException($"descriptor {index} already taken");
        _fds[index] = -1;
        return fd;
    }

    public void Dispose()
    {
        for (var i = 0; i < _fds.Count; i++)
        {
            if (_fds[i] >= 0)
            {
                WireLibc.Close(_fds[i]);
                _fds[i] = -1;
            }
        }
    }
}

/// <summary>A received message: its type, its payload (valid until the next receive) and its descriptors.</summary>
public sealed class IpcMessage : IDisposable
{
    public IpcMessage(MessageType type, ReadOnlyMemory<byte> payload, ReceivedDescriptors descriptors)
    {
        Type = type;
        Payload = payload;
        Descriptors = descriptors;
    }

    public MessageType Type { get; }

    public ReadOnlyMemory<byte> Payload { get; }

    public ReceivedDescriptors Descriptors { get; }

    /// <summary>
    /// The descriptors this message carried were lost on the way in: this process had none free (RLIMIT_NOFILE). The
    /// payload is intact; decoding it with the descriptor check fails.
    /// </summary>
    public bool DescriptorsLost { get; init; }

    /// <summary>
    /// Decodes the payload as <typeparamref name="T"/>, checking its type first, and then that exactly
    /// as many descriptors arrived as the decoded message carries (<see cref="IWireMessage{TSelf}.DescriptorCount"/>).
    /// </summary>
    public T Decode<T>()
        where T : IWireMessage<T>
    {
        if (Type != T.Type)
            throw new WireException($"expected {T.Type}, got {Type}");
        if (Descriptors.Count > IpcChannel.MaxDescriptors)
            throw new WireException($"{T.Type} with {Descriptors.Count} descriptors, over the limit of {IpcChannel.MaxDescriptors}");
        var reader = new WireReader(Payload.Span);
        var message = T.Decode(ref reader);
        reader.End();
        if (Descriptors.Count != T.DescriptorCount(message))
            throw new WireException($"{T.Type} carries exactly {T.DescriptorCount(message)} descriptors here, {Descriptors.Count} arrived");
        return message;
    }

    public void Dispose() => Descriptors.Dispose();
}
