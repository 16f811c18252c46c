using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using Dispatch.Platform.Interop;
using Dispatch.Wire.Interop;
using Microsoft.AspNetCore.Connections;
using Microsoft.Win32.SafeHandles;

namespace Dispatch.Worker.Http;

/// <summary>
/// The output of a handed plain-HTTP/1 connection, written by the caller straight to the socket (<c>send</c>, and
/// <c>sendfile</c> for a static file's body), instead of through Kestrel's socket transport (an output pipe of pooled
/// blocks that its own send loop drains on another thread).
/// </summary>
/// <remarks>
/// <para>Why: a client that does not read (a stalled reader) held the output pipe's 32 KiB and the file chunk in the
/// worker, every byte of the file went through two copies in user space, and a flood of 5,000 of them made the worker's
/// GC promote 250 MB of pipe blocks and segments within its first second while the site's other clients waited
/// (docs/floods.md). With <see cref="SendFileAsync"/> the file goes from the page cache to the socket: a stalled reader
/// holds nothing here, as with nginx.</para>
/// <para>What Kestrel writes (heads, small bodies, anything not a static file) is buffered in arrays rented from the
/// shared pool until the flush, which sends it at once (no thread hop); only when the socket's buffer is full does the
/// flush wait, for the descriptor to become writable (<see cref="FdReactor"/>). The time it has waited is
/// <see cref="WaitingSince"/>: the send timeout counts from there (<see cref="SendWatchdog"/>).</para>
/// <para>A static file's body bytes are given to Kestrel as placeholders (<see cref="AddPlaceholders"/>): Kestrel
/// counts them against the Content-Length and the access log counts them, but they are never sent — the file's bytes
/// were, by <c>sendfile</c>.</para>
/// <para>A send that fails (the client reset, or the send timeout aborted the connection) ends the output
/// (<see cref="Ended"/>: flushes report it as completed) and aborts the connection, as Kestrel's transport does, so
/// that Kestrel does not take the short response for the application's fault. The transport owns the socket and closes
/// it: each system call here, and each arming of a wait, holds a reference on its handle, so that the descriptor cannot
/// be closed, and its number reused, under it (a wait itself does not: see <see cref="WaitWritableAsync"/>).</para>
/// </remarks>
internal sealed class DirectSocketWriter : PipeWriter, IDisposable
{
    /// <summary>The most placeholder bytes one GetMemory may ask for: what <see cref="AddPlaceholders"/> callers advance at once.</summary>
    internal const int MaxPlaceholder = 64 * 1024;

    /// <summary>Its watches' owner in the <see cref="FdReactor"/> (a connection's socket while a send waits).</summary>
    internal const string WatchOwner = "socket";

    private const int SegmentSize = 4096;
    private const int EINTR = 4;
    private const int MsgMore = 0x8000;

    // How often a wait looks again once the connection's input has ended (WaitWritableAsync).
    private static readonly TimeSpan LookAgain = TimeSpan.FromSeconds(1);

    // What GetMemory gives while placeholders are due: written into by Kestrel, never read or sent.
    private static readonly byte[] Scratch = new byte[MaxPlaceholder];

    private readonly SafeSocketHandle _handle;
    private readonly int _fd;
    private readonly PipeWriter _transportOutput;
    private readonly ConnectionContext _connection;
    private readonly Lock _gate = new();
    private readonly List<(byte[] Array, int Length)> _full = [];
    private byte[]? _tail;
    private int _tailLength;
    // Bytes of the first buffer (_full[0], or the tail) already sent.
    private int _sentOfFirst;
    private long _placeholders;
    private bool _released;
    // The send that is running is followed by more (sendfile): MSG_MORE.
    private bool _more;
    private bool _completed;
    private bool _ended;
    private long _waitingSince;
    private FdWatch? _watch;
    private CancellationTokenSource? _pendingFlush;

    public DirectSocketWriter(Socket socket, PipeWriter transportOutput, ConnectionContext connection)
    {
        ArgumentNullException.ThrowIfNull(socket);
        _transportOutput = transportOutput;
        _connection = connection;
        // sendfile has no MSG_DONTWAIT: the descriptor itself must not block (the runtime's async receive already
        // made it so; said again here).
        socket.Blocking = false;
        _handle = socket.SafeHandle;
        _fd = (int)_handle.DangerousGetHandle();
    }

    private static long s_fileBytes;

    /// <summary>Bytes every writer of the process has sent with <c>sendfile</c> (tests: the path was taken).</summary>
    internal static long FileBytesSent => Interlocked.Read(ref s_fileBytes);

    /// <summary>True once a send failed: the client is gone, nothing more is sent.</summary>
    public bool Ended => Volatile.Read(ref _ended);

    /// <summary>When the wait for the socket to take bytes began (Environment.TickCount64), or 0 when none is waiting.</summary>
    public long WaitingSince => Volatile.Read(ref _waitingSince);

    public override bool CanGetUnflushedBytes => true;

    public override long UnflushedBytes
    {
        get
        {
            long total = _tailLength - (_full.Count == 0 ? _sentOfFirst : 0);
            for (var i = 0; i < _full.Count; i++)
            {
                total += _full[i].Length - (i == 0 ? _sentOfFirst : 0);
            }

            return total;
        }
    }

    /// <summary>The next <paramref name="count"/> bytes advanced are placeholders for bytes already sent (by <see cref="SendFileAsync"/>).</summary>
    public void AddPlaceholders(long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        _placeholders += count;
    }

    public override Memory<byte> GetMemory(int sizeHint = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sizeHint);
        if (_placeholders > 0)
        {
            if (sizeHint > MaxPlaceholder)
            {
                throw new InvalidOperationException($"A placeholder write of {sizeHint} bytes is larger than {MaxPlaceholder}.");
            }

            return Scratch.AsMemory(0, (int)Math.Min(MaxPlaceholder, Math.Max(sizeHint, _placeholders)));
        }

        var need = Math.Max(sizeHint, 1);
        if (_tail is null || _tail.Length - _tailLength < need)
        {
            if (_tail is not null && _tailLength > 0)
            {
                _full.Add((_tail, _tailLength));
            }
            else if (_tail is not null)
            {
                ArrayPool<byte>.Shared.Return(_tail);
            }

            _tail = ArrayPool<byte>.Shared.Rent(Math.Max(SegmentSize, need));
            _tailLength = 0;
        }

        return _tail.AsMemory(_tailLength);
    }

    public override Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

    public override void Advance(int bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (_placeholders > 0)
        {
            if (bytes > _placeholders)
            {
                throw new InvalidOperationException($"Advanced {bytes} bytes with {_placeholders} placeholders due.");
            }

            _placeholders -= bytes;
            return;
        }

        if (_tail is null || _tailLength + bytes > _tail.Length)
        {
            throw new InvalidOperationException("Advanced past the memory given.");
        }

        _tailLength += bytes;
    }

    public override void CancelPendingFlush()
    {
        lock (_gate)
        {
            _pendingFlush?.Cancel();
        }
    }

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        if (Volatile.Read(ref _ended) || _completed)
        {
            DropBuffers();
            return new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: true));
        }

        return SendBuffered() switch
        {
            Outcome.Done => new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: false)),
            Outcome.Failed => new ValueTask<FlushResult>(new FlushResult(isCanceled: false, isCompleted: true)),
            _ => FlushWhenWritableAsync(cancellationToken),
        };
    }

    /// <summary>
    /// Sends what is buffered, then <paramref name="count"/> bytes of <paramref name="file"/> from
    /// <paramref name="offset"/> with <c>sendfile</c>, waiting for the socket as needed. Returns the file's bytes sent:
    /// fewer than <paramref name="count"/> when the output ended (<see cref="Ended"/>), the file ended early, or the
    /// token fired. Give Kestrel that many placeholders after (<see cref="AddPlaceholders"/>).
    /// </summary>
    public async ValueTask<long> SendFileAsync(SafeFileHandle file, long offset, long count, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(file);
        // The head with MSG_MORE: it leaves in one packet with the file's first bytes, not in one of its own.
        _more = true;
        ValueTask<FlushResult> flushing;
        try
        {
            flushing = FlushAsync(cancellationToken);
        }
        finally
        {
            _more = false;
        }

        var flushed = await flushing.ConfigureAwait(false);
        if (flushed.IsCompleted || flushed.IsCanceled)
        {
            return 0;
        }

        long sent = 0;
        while (sent < count)
        {
            var outcome = SendFileOnce(file, ref offset, count - sent, out var n);
            sent += n;
            if (outcome == Outcome.Done)
            {
                if (n == 0)
                {
                    return sent; // the file ended before count
                }

                continue;
            }

            if (outcome == Outcome.Failed || !await WaitWritableAsync(cancellationToken).ConfigureAwait(false))
            {
                return sent;
            }
        }

        return sent;
    }

    public override void Complete(Exception? exception = null)
    {
        if (_completed)
        {
            return;
        }

        _completed = true;
        if (exception is null && !Volatile.Read(ref _ended))
        {
            // Whatever Kestrel left unflushed (it normally flushes first): what the socket takes now, no waiting.
            SendBuffered();
        }

        Dispose();
        _transportOutput.Complete(exception);
    }

    /// <summary>Ends the writer: no more sends, the wait's registration and the buffers given back (idempotent; <see cref="Complete"/> calls it).</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_released)
            {
                return;
            }

            _released = true;
            if (_watch is { } watch)
            {
                // Out of the epoll set while the descriptor is surely this socket's; once closed, it has left the set
                // by itself, and its number may be another's: then the registration is only forgotten. Either way a
                // waiter is woken (it then finds the writer ended).
                var open = TryEnter();
                watch.Dispose(descriptorOpen: open);
                if (open)
                {
                    _handle.DangerousRelease();
                }

                _watch = null;
            }
        }

        DropBuffers();
    }

    // A reference on the socket's handle, so that its descriptor stays open (and this socket's) until released.
    private bool TryEnter()
    {
        // IsClosed first: a connection's end is no error (DangerousAddRef throws on a closed handle).
        var added = false;
        if (_handle.IsClosed)
        {
            return false;
        }

        try
        {
            _handle.DangerousAddRef(ref added);
        }
        catch (ObjectDisposedException)
        {
        }

        return added;
    }

    private async ValueTask<FlushResult> FlushWhenWritableAsync(CancellationToken cancellationToken)
    {
        CancellationTokenSource pending;
        lock (_gate)
        {
            pending = _pendingFlush = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        }

        try
        {
            while (true)
            {
                if (!await WaitWritableAsync(pending.Token).ConfigureAwait(false))
                {
                    return pending.IsCancellationRequested && !Volatile.Read(ref _ended)
                        ? new FlushResult(isCanceled: true, isCompleted: false)
                        : new FlushResult(isCanceled: false, isCompleted: true);
                }

                switch (SendBuffered())
                {
                    case Outcome.Done:
                        return new FlushResult(isCanceled: false, isCompleted: false);
                    case Outcome.Failed:
                        return new FlushResult(isCanceled: false, isCompleted: true);
                }
            }
        }
        finally
        {
            lock (_gate)
            {
                _pendingFlush = null;
            }

            pending.Dispose();
        }
    }

    /// <summary>
    /// Waits until the socket (probably) takes bytes: true, and the caller sends again (EAGAIN: waits again; the socket
    /// gone: the send fails). False when the token fired or the writer was released.
    /// </summary>
    /// <remarks>
    /// No reference on the socket's handle is held across the wait: the transport's close would wait for it (spinning),
    /// and 5,000 stalled readers that reset at once stalled the worker for 15 s so. A descriptor closed under the wait
    /// leaves the epoll set without an event: the connection's ConnectionClosed (which follows the transport's close)
    /// wakes the wait instead. ConnectionClosed also fires when the client only half-closed (its response still wanted):
    /// after it, the wait looks again every <see cref="LookAgain"/> (the socket closed then: the send fails).
    /// </remarks>
    private async ValueTask<bool> WaitWritableAsync(CancellationToken cancellationToken)
    {
        var closed = _connection.ConnectionClosed;
        using var wake = closed.IsCancellationRequested
            ? CancellationTokenSource.CreateLinkedTokenSource(cancellationToken)
            : CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, closed);
        if (closed.IsCancellationRequested)
        {
            wake.CancelAfter(LookAgain);
        }

        Task<bool> wait;
        lock (_gate)
        {
            // Armed under a reference: the descriptor is surely this socket's (not closed, its number not reused).
            if (_released || !TryEnter())
            {
                return false;
            }

            try
            {
                wait = (_watch ??= FdReactor.Shared.Watch(_fd, WatchOwner)).WaitQuietlyAsync(Libc.EPOLLOUT, wake.Token);
            }
            finally
            {
                _handle.DangerousRelease();
            }
        }

        Volatile.Write(ref _waitingSince, Math.Max(1, Environment.TickCount64));
        try
        {
            return await wait.ConfigureAwait(false) || !(cancellationToken.IsCancellationRequested || Volatile.Read(ref _released));
        }
        finally
        {
            Volatile.Write(ref _waitingSince, 0);
        }
    }

    private Outcome SendBuffered()
    {
        lock (_gate)
        {
            if (_released || _ended || !TryEnter())
            {
                return Gone();
            }

            try
            {
                return SendBufferedLocked();
            }
            finally
            {
                _handle.DangerousRelease();
            }
        }
    }

    private Outcome SendBufferedLocked()
    {
        // Several buffers (a TLS flush of several records, a large body written before one flush): one sendmsg for
        // as many as it takes, as Kestrel's transport does.
        while (_full.Count > 0)
        {
            var outcome = SendManyLocked();
            if (outcome != Outcome.Done)
            {
                return outcome;
            }
        }

        if (_tail is not null && _tailLength > _sentOfFirst)
        {
            var outcome = SendLocked(_tail, _tailLength);
            if (outcome != Outcome.Done)
            {
                return outcome;
            }
        }

        // Everything sent: the buffers go back to the pool (an idle keep-alive connection holds none).
        if (_tail is not null)
        {
            ArrayPool<byte>.Shared.Return(_tail);
            _tail = null;
        }

        _tailLength = 0;
        _sentOfFirst = 0;
        return Outcome.Done;
    }

    // One sendmsg of the full buffers and the tail (up to MaxIov of them); what it took is consumed: Done means it
    // took something (the caller goes on), never that all is sent.
    private unsafe Outcome SendManyLocked()
    {
        const int MaxIov = 32;
        var count = Math.Min(MaxIov, _full.Count + (_tail is not null && _tailLength > 0 ? 1 : 0));
        var iov = stackalloc WireLibc.IoVec[count];
        Span<System.Runtime.InteropServices.GCHandle> pins = stackalloc System.Runtime.InteropServices.GCHandle[count];
        pins.Clear(); // unallocated until pinned below (the finally frees only those)
        nint sent;
        try
        {
            for (var i = 0; i < count; i++)
            {
                var (array, length) = i < _full.Count ? _full[i] : (_tail!, _tailLength);
                var start = i == 0 ? _sentOfFirst : 0;
                pins[i] = System.Runtime.InteropServices.GCHandle.Alloc(array, System.Runtime.InteropServices.GCHandleType.Pinned);
                iov[i].Base = (byte*)pins[i].AddrOfPinnedObject() + start;
                iov[i].Len = (nuint)(length - start);
            }

            var message = new WireLibc.MsgHdr { Iov = iov, IovLen = (nuint)count };
            do
            {
                sent = WireLibc.SendMsg(_fd, &message, Libc.MSG_NOSIGNAL | Libc.MSG_DONTWAIT | (_more ? MsgMore : 0));
            }
            while (sent < 0 && Libc.LastError == EINTR);
        }
        finally
        {
            foreach (var pin in pins)
            {
                if (pin.IsAllocated)
                {
                    pin.Free();
                }
            }
        }

        if (sent < 0)
        {
            return Libc.LastError == Libc.EAGAIN ? Outcome.WouldBlock : Fail();
        }

        // Consume what was sent: whole full buffers back to the pool, then a part of the next (or of the tail).
        var left = (long)sent;
        while (left > 0 && _full.Count > 0)
        {
            var (array, length) = _full[0];
            var rest = length - _sentOfFirst;
            if (left < rest)
            {
                _sentOfFirst += (int)left;
                return Outcome.Done;
            }

            left -= rest;
            _sentOfFirst = 0;
            _full.RemoveAt(0);
            ArrayPool<byte>.Shared.Return(array);
        }

        _sentOfFirst += (int)left;
        return Outcome.Done;
    }

    // Sends array[_sentOfFirst..length]; on Done, _sentOfFirst is back to 0.
    private unsafe Outcome SendLocked(byte[] array, int length)
    {
        while (_sentOfFirst < length)
        {
            nint n;
            fixed (byte* p = array)
            {
                n = Libc.Send(_fd, p + _sentOfFirst, (nuint)(length - _sentOfFirst), Libc.MSG_NOSIGNAL | Libc.MSG_DONTWAIT | (_more ? MsgMore : 0));
            }

            if (n >= 0)
            {
                _sentOfFirst += (int)n;
                continue;
            }

            var errno = Libc.LastError;
            if (errno == EINTR)
            {
                continue;
            }

            if (errno == Libc.EAGAIN)
            {
                return Outcome.WouldBlock;
            }

            return Fail();
        }

        _sentOfFirst = 0;
        return Outcome.Done;
    }

    private unsafe Outcome SendFileOnce(SafeFileHandle file, ref long offset, long count, out long sent)
    {
        sent = 0;
        lock (_gate)
        {
            if (_released || _ended || !TryEnter())
            {
                return Gone();
            }

            var added = false;
            file.DangerousAddRef(ref added);
            try
            {
                var fileFd = (int)file.DangerousGetHandle();
                while (sent < count)
                {
                    var position = offset;
                    var n = Libc.SendFile(_fd, fileFd, &position, (nuint)Math.Min(count - sent, 1 << 30));
                    if (n > 0)
                    {
                        sent += n;
                        offset = position;
                        Interlocked.Add(ref s_fileBytes, n);
                        continue;
                    }

                    if (n == 0)
                    {
                        return Outcome.Done;
                    }

                    var errno = Libc.LastError;
                    if (errno == EINTR)
                    {
                        continue;
                    }

                    return errno == Libc.EAGAIN ? Outcome.WouldBlock : Fail();
                }

                return Outcome.Done;
            }
            finally
            {
                file.DangerousRelease();
                _handle.DangerousRelease();
            }
        }
    }

    // The client is gone (or the connection was aborted): ends the output and aborts the connection, as Kestrel's
    // transport does when its send fails. Called under _gate.
    private Outcome Fail()
    {
        if (!_ended)
        {
            Volatile.Write(ref _ended, true);
            ThreadPool.UnsafeQueueUserWorkItem(static connection => connection.Abort(new ConnectionAbortedException("The client is gone: a send failed.")), _connection, preferLocal: true);
        }

        return Outcome.Failed;
    }

    // The transport closed the socket (or this writer was released): the output has ended, nothing to abort.
    private Outcome Gone()
    {
        Volatile.Write(ref _ended, true);
        return Outcome.Failed;
    }

    private void DropBuffers()
    {
        lock (_gate)
        {
            foreach (var (array, _) in _full)
            {
                ArrayPool<byte>.Shared.Return(array);
            }

            _full.Clear();
            if (_tail is not null)
            {
                ArrayPool<byte>.Shared.Return(_tail);
                _tail = null;
            }

            _tailLength = 0;
            _sentOfFirst = 0;
        }
    }

    private enum Outcome
    {
        Done,
        WouldBlock,
        Failed,
    }
}
