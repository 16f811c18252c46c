using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using Dispatch.Platform.Hosting;
using Dispatch.Wire.Tls;
using Microsoft.AspNetCore.Connections;

namespace Dispatch.Worker.Tls;

/// <summary>
/// The TLS record layer of a handed session (<see cref="Dispatch.Wire.ConnectionMode.HandedTls"/>): turns a
/// transport carrying the client's records into a plaintext <see cref="IDuplexPipe"/> for Kestrel, and back.
/// </summary>
/// <remarks>
/// <para>Reading, one loop: whole records from the transport are opened straight into the plaintext input pipe
/// (a record that straddles the transport's segments is first copied to scratch space rented for that record alone);
/// alerts, KeyUpdate and everything else the peer may send after the handshake are handled here. Writing, no loop:
/// Kestrel writes into buffers rented for the purpose (<see cref="PlaintextWriter"/>), and its flush cuts them into
/// records of up to 16 KiB whole (<see cref="RecordBuffer"/>; small writes made before one flush share a record),
/// encrypted directly into the transport's buffer — from where the plaintext lies when a record's plaintext is in one
/// buffer (<see cref="TlsRecordProtection.EncryptFrom"/>), else copied there first — then flushes the transport.</para>
/// <para>Memory: the input pipe and the writer rent from <see cref="TlsBufferPool"/> and give every buffer back once read
/// or flushed, so an idle keep-alive connection holds no buffer of this layer (and the socket transport holds none
/// either while it waits): what it holds is this object, the input pipe and the read loop's state (docs/operations.md,
/// "Memory per idle connection").</para>
/// <para>Ending. Kestrel completes its output: close_notify, then the transport's output is completed (the socket
/// transport sends what is left and closes). The peer's close_notify: end of Kestrel's input (it answers by completing
/// its output, hence our close_notify). A protocol error: one fatal alert, a log line (ConnectionId, Alert, Reason),
/// the transport's output completed, and Kestrel's input failed once the transport has closed — so that the alert
/// leaves before anything can abort the socket. The peer's fatal alert: the connection ends without an answer.</para>
/// <para>Call <see cref="ServeAsync"/>; it returns once Kestrel, the read loop and the close are done. One connection's failure touches
/// no other: everything here is per connection.</para>
/// </remarks>
public sealed partial class TlsRecordLayer : IDuplexPipe, IAsyncDisposable
{
    private const byte AlertWarning = 1;
    private const byte AlertFatal = 2;
    private const byte HandshakeKeyUpdate = 24;

    /// <summary>
    /// The most a record takes whole, header and tag included: one large block of the transport's pool
    /// (<see cref="Http.TransportBlockPool.LargeBlock"/>). A full record of 2^14 bytes of plaintext (16,406 to 16,413
    /// bytes) took a 32 KiB array of the shared array pool, whose sizes are powers of two, and a client that does not
    /// read held two of them in the pipe (docs/floods.md, "What a stalled TLS reader holds").
    /// </summary>
    internal const int RecordBuffer = 16 * 1024;

    /// <summary>The most plaintext one record of at most <see cref="RecordBuffer"/> bytes carries with any suite (the
    /// largest overhead is TLS 1.2's AES-GCM, 29 bytes): a writer flushing this much at once makes one record.</summary>
    internal const int RecordPlaintext = RecordBuffer - 32;

    // Plaintext opened per flush at most (the records of one read of the transport may hold much more).
    private const int BatchPlaintext = 64 * 1024;

    private static readonly PipeOptions s_inputOptions = new(
        pool: TlsBufferPool.Instance,
        readerScheduler: PipeScheduler.ThreadPool,
        writerScheduler: PipeScheduler.ThreadPool,
        pauseWriterThreshold: 64 * 1024,
        resumeWriterThreshold: 32 * 1024,
        minimumSegmentSize: 4096,
        useSynchronizationContext: false);

    private readonly IDuplexPipe _transport;
    private readonly TlsRecordProtection _reader;
    private readonly TlsRecordProtection _writer;
    private readonly Pipe _input = new(s_inputOptions);
    private readonly PlaintextWriter _output;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly string _connectionId;
    private readonly Serilog.ILogger _log;
    private readonly ConnectionLogBudget? _connectionLog;
    private readonly bool _tls13;

    // Guarded by _writeLock: nothing more may be written (close_notify or a fatal alert sent, or the transport gone).
    private bool _writeClosed;

    // We asked the peer to update its key and have not seen it do so yet.
    private bool _updateRequested;
    private Task _readLoop = Task.CompletedTask;
    // Set when Kestrel completes its output: the close_notify (or the transport's end) on its way.
    private Task _writeLoop = Task.CompletedTask;
    private int _disposed;

    private TlsRecordLayer(IDuplexPipe transport, TlsRecordProtection reader, TlsRecordProtection writer, string connectionId, Serilog.ILogger log, ConnectionLogBudget? connectionLog)
    {
        _transport = transport;
        _reader = reader;
        _writer = writer;
        _connectionId = connectionId;
        _log = log;
        _connectionLog = connectionLog;
        _tls13 = reader.Version == TlsSessionState.Tls13;
        _output = new PlaintextWriter(this);
    }

    /// <summary>Plaintext from the client (Kestrel's transport input).</summary>
    public PipeReader Input => _input.Reader;

    /// <summary>Plaintext to the client (Kestrel's transport output).</summary>
    public PipeWriter Output => _output;

    /// <summary>
    /// Derives the keys of <paramref name="session"/> (and clears its secrets) and starts the two loops over
    /// <paramref name="transport"/> (ciphertext: the bytes the dispatcher already read first, then the socket).
    /// </summary>
    /// <param name="connectionLog">The worker's budget for lines about single connections (a client's alert, a broken record); null: every line.</param>
    /// <exception cref="NotSupportedException">A version or cipher suite this layer does not speak.</exception>
    public static TlsRecordLayer Start(IDuplexPipe transport, TlsSessionState session, string connectionId, Serilog.ILogger log, ConnectionLogBudget? connectionLog = null)
    {
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(log);
        if (!TlsRecordProtection.IsSupported(session.Version, session.CipherSuite))
        {
            session.Clear();
            throw new NotSupportedException($"TLS version 0x{session.Version:X4} with cipher suite 0x{session.CipherSuite:X4} is not supported");
        }

        TlsRecordProtection? reader = null;
        try
        {
            reader = TlsRecordProtection.ForReading(session);
            var writer = TlsRecordProtection.ForWriting(session);
            var layer = new TlsRecordLayer(transport, reader, writer, connectionId, log, connectionLog);
            reader = null;
            layer._readLoop = layer.ReadLoopAsync();
            return layer;
        }
        finally
        {
            reader?.Dispose();
            session.Clear();
        }
    }

    /// <summary>
    /// Connection middleware body: runs <paramref name="next"/> (Kestrel's HTTP) over the plaintext of
    /// <paramref name="connection"/>'s transport, and returns when both are done (the transport restored).
    /// </summary>
    /// <param name="plaintext">Application data the dispatcher already decrypted (identity vhosts: the first request head), read first.</param>
    /// <param name="connectionLog">The worker's budget for lines about single connections; null: every line.</param>
    public static async Task ServeAsync(ConnectionContext connection, TlsSessionState session, Serilog.ILogger log, ConnectionDelegate next, ReadOnlyMemory<byte> plaintext = default, ConnectionLogBudget? connectionLog = null)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(next);
        var transport = connection.Transport;
        TlsRecordLayer layer;
        try
        {
            layer = Start(transport, session, connection.ConnectionId, log, connectionLog);
        }
        catch (NotSupportedException e)
        {
            if (connectionLog?.Allow() ?? true)
                log.Warning("TLS connection {ConnectionId} refused: {Alert} ({Reason})", connection.ConnectionId, TlsAlertNames.Name(TlsAlertDescription.InternalError), e.Message);
            return;
        }

        await using (layer.ConfigureAwait(false))
        {
            connection.Transport = plaintext.IsEmpty ? layer : new PrefixedDuplexPipe(new Http.PrefixedPipeReader(plaintext, layer.Input), layer.Output);
            try
            {
                await next(connection).ConfigureAwait(false);
            }
            finally
            {
                connection.Transport = transport;
            }
        }
    }

    /// <summary>Ends Kestrel's side of the pipes (if it has not) and waits for both loops.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _input.Reader.CompleteAsync().ConfigureAwait(false);
        await _output.CompleteAsync().ConfigureAwait(false);
        await _writeLoop.ConfigureAwait(false);

        // The transport's output is complete, so the socket transport closes the socket and the read loop ends; this
        // wakes it in any case (a transport that keeps its input open).
        _transport.Input.CancelPendingRead();
        await _readLoop.ConfigureAwait(false);
        _reader.Dispose();
        _writer.Dispose();
        _writeLock.Dispose();
    }

    /// <summary>Whether this connection's line may be written now: the worker's budget (<see cref="ConnectionLogBudget"/>) counts it otherwise.</summary>
    private bool MayLog() => _connectionLog?.Allow() ?? true;

    private async Task ReadLoopAsync()
    {
        await Task.Yield();
        var input = _transport.Input;
        Exception? error = null;
        try
        {
            while (true)
            {
                var result = await input.ReadAsync().ConfigureAwait(false);
                var buffer = result.Buffer;
                var outcome = default(Outcome);
                try
                {
                    outcome = ProcessRecords(ref buffer);
                }
                finally
                {
                    // Stopped for a full batch: what is left is examined later, without waiting for more.
                    input.AdvanceTo(buffer.Start, outcome.Capped ? buffer.Start : buffer.End);
                }

                if (outcome.KeyUpdateRequested)
                {
                    await SendKeyUpdateAsync(requestUpdate: false).ConfigureAwait(false);
                }
                else if (_tls13 && _reader.KeyUpdateAdvised && !_updateRequested)
                {
                    _updateRequested = true;
                    await SendKeyUpdateAsync(requestUpdate: true).ConfigureAwait(false);
                }

                if (outcome.Plaintext && (await _input.Writer.FlushAsync().ConfigureAwait(false)).IsCompleted)
                {
                    break; // Kestrel stopped reading.
                }

                if (outcome.CloseNotify)
                {
                    break;
                }

                if (outcome.PeerAlert is { } alert)
                {
                    if (MayLog())
                        _log.Information("TLS connection {ConnectionId} closed by the client's alert {Alert}", _connectionId, TlsAlertNames.Name(alert));
                    error = new ConnectionAbortedException($"the client sent the alert {TlsAlertNames.Name(alert)}");
                    await CloseTransportAsync().ConfigureAwait(false);
                    break;
                }

                if (outcome.Capped)
                {
                    continue;
                }

                if (result.IsCompleted || result.IsCanceled)
                {
                    if (!buffer.IsEmpty)
                    {
                        if (MayLog())
                            _log.Information("TLS connection {ConnectionId} ended inside a record ({Bytes} bytes of it received)", _connectionId, buffer.Length);
                        error = new ConnectionAbortedException("the connection ended inside a TLS record");

                        // Quietly, as after the peer's fatal alert: the transport is closed before Kestrel hears of
                        // it. Otherwise the end of Kestrel's output could send a close_notify first (seen once in a
                        // full Worker test run: TlsRecordLayerTests' truncated record).
                        await CloseTransportAsync().ConfigureAwait(false);
                    }

                    break;
                }
            }
        }
        catch (TlsAlertException e)
        {
            if (MayLog())
                _log.Warning("TLS connection {ConnectionId} refused: {Alert} ({Reason})", _connectionId, TlsAlertNames.Name(e.Alert), e.Message);
            error = new ConnectionAbortedException($"TLS {TlsAlertNames.Name(e.Alert)}: {e.Message}", e);
            await FailAsync(e.Alert).ConfigureAwait(false);
            await DrainAsync(input).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ConnectionResetException or ConnectionAbortedException or ObjectDisposedException or OperationCanceledException)
        {
            error = e;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A bug of ours: this connection ends, loudly; no other is touched.
            _log.Error(e, "TLS connection {ConnectionId} failed in the record layer", _connectionId);
            error = e;
            await FailAsync(TlsAlertDescription.InternalError).ConfigureAwait(false);
        }

        await _input.Writer.CompleteAsync(error).ConfigureAwait(false);
    }

    /// <summary>Opens every whole record in <paramref name="buffer"/> (sliced past them) into the plaintext pipe.</summary>
    private Outcome ProcessRecords(ref ReadOnlySequence<byte> buffer)
    {
        var outcome = default(Outcome);
        Span<byte> header = stackalloc byte[TlsRecordProtection.HeaderLength];
        while (buffer.Length >= TlsRecordProtection.HeaderLength && !outcome.Stop)
        {
            if (outcome.PlaintextBytes >= BatchPlaintext)
            {
                // Enough for one flush: Kestrel's pipe pushes back at 64 KiB, and a batch should not grow past it.
                outcome.Capped = true;
                break;
            }

            buffer.Slice(0, TlsRecordProtection.HeaderLength).CopyTo(header);
            var length = BinaryPrimitives.ReadUInt16BigEndian(header[3..]);
            CheckHeader((TlsContentType)header[0], length);
            var total = TlsRecordProtection.HeaderLength + length;
            if (buffer.Length < total)
            {
                break;
            }

            var recordBytes = buffer.Slice(0, total);
            byte[]? scratch = null;
            try
            {
                ReadOnlySpan<byte> record;
                if (recordBytes.IsSingleSegment)
                {
                    record = recordBytes.FirstSpan;
                }
                else
                {
                    scratch = TlsBufferPool.RentArray(total);
                    recordBytes.CopyTo(scratch);
                    record = scratch.AsSpan(0, total);
                }

                OpenRecord(record, ref outcome);
            }
            finally
            {
                if (scratch is not null)
                {
                    TlsBufferPool.ReturnArray(scratch);
                }
            }

            buffer = buffer.Slice(total);
        }

        return outcome;
    }

    private void CheckHeader(TlsContentType type, int length)
    {
        if (_tls13)
        {
            switch (type)
            {
                case TlsContentType.ApplicationData:
                    break;
                case TlsContentType.ChangeCipherSpec:
                    throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, "change_cipher_spec after the handshake");
                case TlsContentType.Handshake or TlsContentType.Alert:
                    throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, $"unprotected {type} record after the handshake");
                default:
                    throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, $"record of unknown type {(byte)type}");
            }

            if (length > TlsRecordProtection.MaxCiphertextTls13)
            {
                throw new TlsAlertException(TlsAlertDescription.RecordOverflow, $"record of {length} bytes exceeds {TlsRecordProtection.MaxCiphertextTls13}");
            }
        }
        else
        {
            if (type is not (TlsContentType.ApplicationData or TlsContentType.Alert or TlsContentType.Handshake or TlsContentType.ChangeCipherSpec))
            {
                throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, $"record of unknown type {(byte)type}");
            }

            if (length > TlsRecordProtection.MaxCiphertextTls12)
            {
                throw new TlsAlertException(TlsAlertDescription.RecordOverflow, $"record of {length} bytes exceeds {TlsRecordProtection.MaxCiphertextTls12}");
            }
        }
    }

    private void OpenRecord(ReadOnlySpan<byte> record, ref Outcome outcome)
    {
        var writer = _input.Writer;
        var destination = writer.GetSpan(Math.Max(1, _reader.DecryptedLength(record.Length)));
        TlsContentType type;
        int length;
        try
        {
            type = _reader.Decrypt(record, destination, out length);
        }
        catch (InvalidOperationException e)
        {
            throw new TlsAlertException(TlsAlertDescription.InternalError, "the read sequence number is exhausted", e);
        }

        switch (type)
        {
            case TlsContentType.ApplicationData:
                if (length > 0)
                {
                    writer.Advance(length);
                    outcome.Plaintext = true;
                    outcome.PlaintextBytes += length;
                }

                break;
            case TlsContentType.Alert:
                ReceiveAlert(destination[..length], ref outcome);
                break;
            case TlsContentType.Handshake:
                ReceiveHandshake(destination[..length], ref outcome);
                break;
            case TlsContentType.ChangeCipherSpec:
                throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, "change_cipher_spec after the handshake");
            default:
                throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, $"record of unknown content type {(byte)type}");
        }
    }

    private void ReceiveAlert(ReadOnlySpan<byte> alert, ref Outcome outcome)
    {
        if (alert.Length != 2)
        {
            throw new TlsAlertException(TlsAlertDescription.DecodeError, $"alert record of {alert.Length} bytes");
        }

        var level = alert[0];
        var description = (TlsAlertDescription)alert[1];
        if (level is not (AlertWarning or AlertFatal))
        {
            throw new TlsAlertException(TlsAlertDescription.IllegalParameter, $"alert of unknown level {level}");
        }

        if (description == TlsAlertDescription.CloseNotify)
        {
            outcome.CloseNotify = true;
            outcome.Stop = true;
        }
        else if (level == AlertWarning && (description == TlsAlertDescription.UserCanceled || !_tls13))
        {
            // user_canceled precedes close_notify; TLS 1.2 warnings (e.g. no_renegotiation) change nothing here.
        }
        else
        {
            // TLS 1.3: every other alert is fatal, whatever its level.
            outcome.PeerAlert = description;
            outcome.Stop = true;
        }
    }

    private void ReceiveHandshake(ReadOnlySpan<byte> messages, ref Outcome outcome)
    {
        if (!_tls13)
        {
            throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, "handshake message after the hand-off (renegotiation is not supported)");
        }

        if (messages.IsEmpty)
        {
            throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, "empty handshake record");
        }

        while (!messages.IsEmpty)
        {
            if (messages.Length < 4 || messages.Length - 4 < ((messages[1] << 16) | (messages[2] << 8) | messages[3]))
            {
                throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, "handshake message split across records");
            }

            var type = messages[0];
            var length = (messages[1] << 16) | (messages[2] << 8) | messages[3];
            if (type != HandshakeKeyUpdate)
            {
                throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, $"handshake message {type} after the hand-off");
            }

            if (length != 1)
            {
                throw new TlsAlertException(TlsAlertDescription.DecodeError, $"KeyUpdate of {length} bytes");
            }

            var request = messages[4];
            if (request > 1)
            {
                throw new TlsAlertException(TlsAlertDescription.IllegalParameter, $"KeyUpdate with request_update {request}");
            }

            if (messages.Length != 5)
            {
                throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, "KeyUpdate not at the end of its record");
            }

            _reader.UpdateKey();
            _updateRequested = false;
            outcome.KeyUpdateRequested |= request == 1;
            messages = messages[5..];
        }
    }

    /// <summary>
    /// What Kestrel wrote since its last flush, as records into the transport's buffer, then the transport flushed: the
    /// writer's flush. Returns the transport's answer (completed once nothing more may be written).
    /// </summary>
    private async ValueTask<FlushResult> SendAsync(PlaintextWriter plaintext, CancellationToken cancellationToken)
    {
        try
        {
            await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            plaintext.Discard();
            return new FlushResult(isCanceled: true, isCompleted: false);
        }

        try
        {
            if (_writeClosed)
            {
                plaintext.Discard();
                return new FlushResult(isCanceled: false, isCompleted: true);
            }

            plaintext.WriteRecords();
            var flush = await _transport.Output.FlushAsync(cancellationToken).ConfigureAwait(false);
            if (flush.IsCompleted)
            {
                _writeClosed = true;
                await _transport.Output.CompleteAsync().ConfigureAwait(false);
            }

            return flush;
        }
        catch (Exception e) when (e is IOException or ConnectionResetException or ConnectionAbortedException or ObjectDisposedException or InvalidOperationException)
        {
            // The transport is gone, or the write sequence number is exhausted: no close_notify, just the end of the
            // connection; Kestrel sees its output completed.
            plaintext.Discard();
            _writeClosed = true;
            await _transport.Output.CompleteAsync().ConfigureAwait(false);
            return new FlushResult(isCanceled: false, isCompleted: true);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>
    /// Kestrel completed its output: what it wrote last and close_notify, then the transport's output completed; or,
    /// when it aborted (<paramref name="error"/>), the transport's output completed without another record.
    /// </summary>
    private async Task CloseAsync(PlaintextWriter plaintext, Exception? error)
    {
        try
        {
            await _writeLock.WaitAsync().ConfigureAwait(false);
            try
            {
                if (_writeClosed)
                {
                    plaintext.Discard();
                    return;
                }

                _writeClosed = true;
                if (error is null)
                {
                    plaintext.WriteRecords();
                    WriteAlert(AlertWarning, TlsAlertDescription.CloseNotify);
                    await _transport.Output.FlushAsync().ConfigureAwait(false);
                }
                else
                {
                    plaintext.Discard();
                }

                await _transport.Output.CompleteAsync().ConfigureAwait(false);
            }
            finally
            {
                _writeLock.Release();
            }
        }
        catch (Exception e) when (e is IOException or ConnectionResetException or ConnectionAbortedException or ObjectDisposedException or OperationCanceledException or InvalidOperationException)
        {
            // The transport is gone (or the sequence number exhausted): the end of the connection, no close_notify.
            plaintext.Discard();
            await _transport.Output.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A bug of ours: this connection ends, loudly; no other is touched.
            _log.Error(e, "TLS connection {ConnectionId} failed in the record layer", _connectionId);
            plaintext.Discard();
            await _transport.Output.CompleteAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Cuts the <paramref name="length"/> bytes <paramref name="plaintext"/> holds into records of up to
    /// <see cref="RecordBuffer"/> bytes whole, encrypted into the transport's buffer. Under the lock.
    /// </summary>
    private void WriteRecords(PlaintextWriter plaintext, long length)
    {
        var output = _transport.Output;
        var most = RecordBuffer - _writer.Overhead;
        while (length > 0)
        {
            if (_tls13 && _writer.KeyUpdateAdvised)
            {
                WriteKeyUpdate(requestUpdate: false);
            }

            var size = (int)Math.Min(length, most);
            var record = output.GetSpan(_writer.RecordLength(size));
            if (plaintext.TryTakeContiguous(size, _tls13 ? 1 : 0, out var source))
            {
                // Sealed from where Kestrel (or a static file's read) wrote it: no copy into the record first.
                output.Advance(_writer.EncryptFrom(TlsContentType.ApplicationData, source, size, record));
            }
            else
            {
                var payload = record.Slice(_writer.PayloadOffset, size);
                plaintext.Take(payload);
                output.Advance(_writer.Encrypt(TlsContentType.ApplicationData, payload, record));
            }

            length -= size;
        }
    }

    /// <summary>Our KeyUpdate under the current key, then the switch to the next one (RFC 8446 4.6.3). Under the lock.</summary>
    private void WriteKeyUpdate(bool requestUpdate)
    {
        var record = _transport.Output.GetSpan(_writer.RecordLength(5));
        var payload = record.Slice(_writer.PayloadOffset, 5);
        payload[0] = HandshakeKeyUpdate;
        payload[1] = 0;
        payload[2] = 0;
        payload[3] = 1;
        payload[4] = requestUpdate ? (byte)1 : (byte)0;
        _transport.Output.Advance(_writer.Encrypt(TlsContentType.Handshake, payload, record));
        _writer.UpdateKey();
    }

    private void WriteAlert(byte level, TlsAlertDescription description)
    {
        var record = _transport.Output.GetSpan(_writer.RecordLength(2));
        var payload = record.Slice(_writer.PayloadOffset, 2);
        payload[0] = level;
        payload[1] = (byte)description;
        _transport.Output.Advance(_writer.Encrypt(TlsContentType.Alert, payload, record));
    }

    private async Task SendKeyUpdateAsync(bool requestUpdate)
    {
        await _writeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (!_writeClosed)
            {
                WriteKeyUpdate(requestUpdate);
                if ((await _transport.Output.FlushAsync().ConfigureAwait(false)).IsCompleted)
                {
                    _writeClosed = true;
                }
            }
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>Sends a fatal alert (unless nothing may be written any more) and completes the transport's output.</summary>
    private async Task FailAsync(TlsAlertDescription alert)
    {
        await _writeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (!_writeClosed)
            {
                _writeClosed = true;
                try
                {
                    WriteAlert(AlertFatal, alert);
                    await _transport.Output.FlushAsync().ConfigureAwait(false);
                }
                catch (Exception e) when (e is IOException or ConnectionResetException or ConnectionAbortedException or ObjectDisposedException or InvalidOperationException)
                {
                    // The peer is gone already.
                }

                await _transport.Output.CompleteAsync().ConfigureAwait(false);
            }
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>Completes the transport's output without another record (the socket transport then closes the socket).</summary>
    private async Task CloseTransportAsync()
    {
        await _writeLock.WaitAsync().ConfigureAwait(false);
        try
        {
            if (!_writeClosed)
            {
                _writeClosed = true;
                await _transport.Output.CompleteAsync().ConfigureAwait(false);
            }
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>
    /// Discards input until the transport ends (it does once the socket transport has sent the alert and closed), for
    /// 10 s at most.
    /// </summary>
    private static async Task DrainAsync(PipeReader input)
    {
        using var linger = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        using var registration = linger.Token.Register(input.CancelPendingRead);
        try
        {
            while (true)
            {
                var result = await input.ReadAsync().ConfigureAwait(false);
                input.AdvanceTo(result.Buffer.End);
                if (result.IsCompleted || result.IsCanceled)
                {
                    return;
                }
            }
        }
        catch (Exception e) when (e is IOException or ConnectionResetException or ConnectionAbortedException or ObjectDisposedException or OperationCanceledException or InvalidOperationException)
        {
            // Gone.
        }
    }

    /// <summary>What one batch of records asked for.</summary>
    private struct Outcome
    {
        public bool Plaintext;
        public bool CloseNotify;
        public bool KeyUpdateRequested;
        public TlsAlertDescription? PeerAlert;
        public bool Stop;
        public int PlaintextBytes;
        public bool Capped;
    }
}
