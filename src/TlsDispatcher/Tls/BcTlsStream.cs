using System.Buffers;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Authentication;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// A <see cref="Stream"/> of plaintext over a <see cref="Socket"/>, driving a <see cref="BcTlsSession"/> with
/// async socket I/O. One read and one write may run at the same time (full-duplex proxying); a read never
/// waits for a write that is stalled on the network.
/// </summary>
/// <remarks>
/// <para>Memory: nothing is held between operations. A read first waits for the socket to become
/// readable with a zero-byte receive (skipped while data is streaming in), then rents a buffer from
/// <see cref="ArrayPool{T}"/> only while it receives and hands the bytes to BouncyCastle; writes rent the buffer for the encrypted records
/// only while sending. An idle connection costs no buffer.</para>
/// <para>Copies: socket → rented buffer → BouncyCastle's input queue → record decryption (a new
/// array per record, BouncyCastle's design) → caller's buffer. Plaintext from an array-backed
/// <see cref="Memory{T}"/> is handed to BouncyCastle without a copy.</para>
/// <para>BouncyCastle has no half-close: a close_notify from the peer is
/// answered with ours and both directions end; reads then return 0. A TCP end without close_notify
/// also reads as 0 (as <c>SslStream</c> does); <see cref="TruncatedByPeer"/> tells them apart.</para>
/// </remarks>
public sealed class BcTlsStream : Stream
{
    private const int ReceiveBufferSize = 64 * 1024;

    // During the handshake: one maximal record and its header, so that what arrives past the handshake (held as
    // ciphertext for a hand-off) stays well below Connection.MaxInitial.
    private const int HandshakeReceiveSize = BcTlsSession.MaxRecordLength + 5;
    private const int WriteChunk = 4 * 16384;

    private readonly Socket _socket;
    private readonly bool _ownsSocket;
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private bool _endOfInput;
    private bool _lastReceiveFilled;
    private int _disposed;

    private BcTlsStream(Socket socket, BcTlsSession session, bool ownsSocket)
    {
        _socket = socket;
        Session = session;
        _ownsSocket = ownsSocket;
    }

    /// <summary>The TLS session (negotiated ALPN, cipher suite, version, alerts).</summary>
    public BcTlsSession Session { get; }

    /// <summary>True when the peer ended TCP without close_notify.</summary>
    public bool TruncatedByPeer { get; private set; }

    /// <inheritdoc/>
    public override bool CanRead => true;

    /// <inheritdoc/>
    public override bool CanSeek => false;

    /// <inheritdoc/>
    public override bool CanWrite => true;

    /// <inheritdoc/>
    public override long Length => throw new NotSupportedException();

    /// <inheritdoc/>
    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    /// <summary>
    /// Completes a server handshake on <paramref name="socket"/> with a new session for
    /// <paramref name="credentials"/>, after offering the bytes the dispatcher already read
    /// (the ClientHello). The handshake timeout is the caller's: cancel <paramref name="cancellationToken"/>.
    /// </summary>
    /// <exception cref="AuthenticationException">The handshake failed (the alert, if any, was sent).</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
    public static Task<BcTlsStream> AuthenticateAsServerAsync(
        Socket socket,
        ReadOnlyMemory<byte> alreadyRead,
        BcServerCredentials credentials,
        IReadOnlyList<string> applicationProtocols,
        CancellationToken cancellationToken)
        => AuthenticateAsServerAsync(socket, new BcTlsSession(credentials, applicationProtocols), alreadyRead, ownsSocket: true, cancellationToken);

    /// <summary>Completes a server handshake on <paramref name="socket"/> with a prepared <paramref name="session"/> (which the stream then owns).</summary>
    /// <param name="releasePlaintext">
    /// True to go on as a plaintext stream (the ciphertext received past the handshake is given to the session); false
    /// to leave it held, for <see cref="BcTlsSession.TryExportForHandOff"/> (call <see cref="BcTlsSession.ReleaseHeldInput"/>
    /// before reading if the hand-off does not happen).
    /// </param>
    /// <exception cref="AuthenticationException">The handshake failed (the alert, if any, was sent).</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
    public static async Task<BcTlsStream> AuthenticateAsServerAsync(
        Socket socket,
        BcTlsSession session,
        ReadOnlyMemory<byte> alreadyRead,
        bool ownsSocket,
        CancellationToken cancellationToken,
        bool releasePlaintext = true)
    {
        ArgumentNullException.ThrowIfNull(socket);
        ArgumentNullException.ThrowIfNull(session);
        var stream = new BcTlsStream(socket, session, ownsSocket);
        try
        {
            if (!alreadyRead.IsEmpty)
            {
                if (MemoryMarshal.TryGetArray(alreadyRead, out ArraySegment<byte> segment))
                    session.Offer(segment.Array!, segment.Offset, segment.Count);
                else
                    session.Offer(alreadyRead.Span);
                await stream.SendPendingAsync(cancellationToken).ConfigureAwait(false);
            }

            while (!session.HandshakeComplete)
            {
                if (!await stream.ReceiveAndOfferAsync(cancellationToken).ConfigureAwait(false))
                    throw new AuthenticationException("the client closed the connection during the TLS handshake");
                await stream.SendPendingAsync(cancellationToken).ConfigureAwait(false);
            }

            if (releasePlaintext)
                session.ReleaseHeldInput();
            return stream;
        }
        catch (BcTlsException e)
        {
            await stream.TrySendFinalAsync().ConfigureAwait(false);
            await stream.DisposeAsync().ConfigureAwait(false);
            throw new AuthenticationException("TLS handshake failed: " + e.Message, e);
        }
        catch (SocketException e)
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw new AuthenticationException("TLS handshake failed: " + e.Message, e);
        }
        catch
        {
            await stream.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <inheritdoc/>
    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        try
        {
            // A zero-byte read waits until plaintext is available (or the end), consuming nothing,
            // so that callers can rent their buffer only once there is something to read.
            while (buffer.IsEmpty)
            {
                if (Session.PlaintextAvailable > 0 || _endOfInput || Session.IsClosed)
                    return 0;
                bool more = await ReceiveAndOfferAsync(cancellationToken).ConfigureAwait(false);
                await SendIfIdleAsync(cancellationToken).ConfigureAwait(false);
                if (!more)
                    return 0;
            }

            while (true)
            {
                int n = MemoryMarshal.TryGetArray(buffer, out ArraySegment<byte> segment)
                    ? Session.ReadPlaintext(segment.Array!, segment.Offset, segment.Count)
                    : Session.ReadPlaintext(buffer.Span);
                if (n > 0)
                    return n;
                if (_endOfInput || Session.IsClosed)
                    return 0;
                bool more = await ReceiveAndOfferAsync(cancellationToken).ConfigureAwait(false);
                await SendIfIdleAsync(cancellationToken).ConfigureAwait(false);
                if (!more)
                    return Session.ReadPlaintext(buffer.Span);
            }
        }
        catch (BcTlsException)
        {
            await TrySendFinalAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <inheritdoc/>
    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        await _sendLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            while (!buffer.IsEmpty)
            {
                ReadOnlyMemory<byte> chunk = buffer[..Math.Min(buffer.Length, WriteChunk)];
                if (MemoryMarshal.TryGetArray(chunk, out ArraySegment<byte> segment))
                    Session.WritePlaintext(segment.Array!, segment.Offset, segment.Count);
                else
                    Session.WritePlaintext(chunk.Span);
                await SendPendingLockedAsync(cancellationToken).ConfigureAwait(false);
                buffer = buffer[chunk.Length..];
            }
        }
        finally
        {
            _sendLock.Release();
        }

        // Output a concurrent read produced (an alert) while we held the lock.
        await SendIfIdleAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Sends close_notify. No plaintext can be written or read afterwards.</summary>
    public async Task CloseAsync(CancellationToken cancellationToken = default)
    {
        Session.Close();
        await SendPendingAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public override int Read(byte[] buffer, int offset, int count)
        => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    /// <inheritdoc/>
    public override void Write(byte[] buffer, int offset, int count)
        => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    /// <inheritdoc/>
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <inheritdoc/>
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <inheritdoc/>
    public override void Flush()
    {
        // Every write is sent before it returns.
    }

    /// <inheritdoc/>
    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <inheritdoc/>
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    /// <inheritdoc/>
    public override void SetLength(long value) => throw new NotSupportedException();

    /// <inheritdoc/>
    public override async ValueTask DisposeAsync()
    {
        if (Volatile.Read(ref _disposed) == 0 && Session.HandshakeComplete && !Session.IsClosed)
        {
            Session.Close();
            await TrySendFinalAsync().ConfigureAwait(false);
        }

        await base.DisposeAsync().ConfigureAwait(false);
    }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            if (Session.HandshakeComplete && !Session.IsClosed)
            {
                Session.Close();
                TrySendFinalSync();
            }

            Release();
        }

        base.Dispose(disposing);
    }

    private void Release()
    {
        if (_ownsSocket)
            _socket.Dispose();
        Session.Dispose();
        _sendLock.Dispose();
    }

    /// <summary>Receives once and offers the bytes to the session. False at the end of the peer's TCP stream.</summary>
    private async ValueTask<bool> ReceiveAndOfferAsync(CancellationToken cancellationToken)
    {
        if (!_lastReceiveFilled)
        {
            // Wait for data without holding a buffer.
            await _socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None, cancellationToken).ConfigureAwait(false);
        }

        int size = Session.HandshakeComplete ? ReceiveBufferSize : HandshakeReceiveSize;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            int received = await _socket.ReceiveAsync(buffer.AsMemory(0, size), SocketFlags.None, cancellationToken).ConfigureAwait(false);
            // Streaming (a large receive): the next one will likely find data at once, skip the zero-byte wait.
            _lastReceiveFilled = received >= ReceiveBufferSize / 4;
            if (received == 0)
            {
                _endOfInput = true;
                TruncatedByPeer = !Session.NotifyEndOfInput() && Session.HandshakeComplete;
                return false;
            }

            Session.Offer(buffer, 0, received);
            return true;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async ValueTask SendPendingAsync(CancellationToken cancellationToken)
    {
        if (Session.OutputAvailable == 0)
            return;
        await _sendLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await SendPendingLockedAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _sendLock.Release();
        }
    }

    /// <summary>
    /// Sends pending output unless a write is sending right now. The read path uses this so that it never waits
    /// behind a write stalled by a peer that is itself waiting for us to read; the writer re-checks after releasing
    /// the lock (<see cref="WriteAsync(ReadOnlyMemory{byte}, CancellationToken)"/>), so nothing is left behind.
    /// </summary>
    private async ValueTask SendIfIdleAsync(CancellationToken cancellationToken)
    {
        while (Session.OutputAvailable > 0 && _sendLock.Wait(0, CancellationToken.None))
        {
            try
            {
                await SendPendingLockedAsync(cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _sendLock.Release();
            }
        }
    }

    private async ValueTask SendPendingLockedAsync(CancellationToken cancellationToken)
    {
        int available = Session.OutputAvailable;
        if (available == 0)
            return;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(Math.Min(available, WriteChunk + 1024));
        try
        {
            int n;
            while ((n = Session.ReadOutputToNetwork(buffer, 0, buffer.Length)) > 0)
                await _socket.SendAsync(buffer.AsMemory(0, n), SocketFlags.None, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Best effort: sends a pending alert or close_notify within a second, ignoring errors.</summary>
    private async ValueTask TrySendFinalAsync()
    {
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            await SendPendingAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or ObjectDisposedException or IOException)
        {
            // The peer may be gone already.
        }
    }

    private void TrySendFinalSync()
    {
        try
        {
            if (!_sendLock.Wait(TimeSpan.FromSeconds(1)))
                return;
            try
            {
                byte[] buffer = new byte[Math.Max(1, Session.OutputAvailable)];
                int n = Session.ReadOutputToNetwork(buffer, 0, buffer.Length);
                if (n > 0)
                    _socket.Send(buffer, 0, n, SocketFlags.None);
            }
            finally
            {
                _sendLock.Release();
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or IOException)
        {
            // The peer may be gone already.
        }
    }
}
