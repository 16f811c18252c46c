using System.Buffers;
using Dispatch.Platform.Hosting;
using Dispatch.Wire.Tls;
using Org.BouncyCastle.Tls;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// One server-side TLS 1.3 / 1.2 connection run by BouncyCastle 2.7's non-blocking <see cref="TlsServerProtocol"/>
/// (policy: <see cref="DispatchTlsServer"/>), with .NET doing the cryptography (<see cref="DotNetTlsCrypto"/>). It
/// does no I/O: feed it what the network delivered (<see cref="Offer(byte[], int, int)"/>), send what it produces
/// (<see cref="ReadOutputToNetwork(byte[], int, int)"/>), and either exchange plaintext
/// (<see cref="ReleaseHeldInput"/>, <see cref="ReadPlaintext(byte[], int, int)"/>, <see cref="WritePlaintext(byte[], int, int)"/>)
/// or hand the session over (<see cref="TryExportForHandOff"/>). Every method takes an internal lock, so one task
/// may read while another writes.
/// </summary>
/// <remarks>
/// <para><b>One record at a time.</b> Until the handshake completes, the session frames records itself (5-byte
/// header, length at most <see cref="MaxRecordLength"/>) and gives BouncyCastle exactly one complete record per
/// call. The record that completes the handshake (TLS 1.3: the client's Finished; TLS 1.2: the client's Finished,
/// answered by ours) is the last one BouncyCastle sees: any bytes after it are held as ciphertext, never decrypted,
/// until <see cref="ReleaseHeldInput"/> (the plaintext proxy) or <see cref="TryExportForHandOff"/> (they travel to
/// the worker with the keys).</para>
/// <para><b>Bounds.</b> <see cref="MaxHandshakeBytes"/> bounds everything received before the handshake completes,
/// held bytes included. BouncyCastle parses the ClientHello (already bounded and validated by
/// <see cref="ClientHelloParser"/>), the client's key share or ClientKeyExchange and its Finished; it parses no
/// peer certificate and verifies no peer signature (no CertificateRequest is ever sent).</para>
/// </remarks>
public sealed class BcTlsSession : IDisposable
{
    /// <summary>Default bound on the bytes accepted from the client before the handshake completes.</summary>
    public const int DefaultMaxHandshakeBytes = 64 * 1024;

    /// <summary>The longest record accepted during the handshake: TLS 1.2's ciphertext limit (2^14 + 2048).</summary>
    public const int MaxRecordLength = 16384 + 2048;

    private const int HeaderLength = 5;

    private readonly Lock _sync = new();
    private readonly DispatchServerProtocol _protocol;
    private readonly DispatchTlsServer _server;
    private readonly DotNetTlsCrypto _crypto;
    private byte[]? _scratch;
    private byte[]? _record;
    private int _recordFilled;
    private byte[]? _held;
    private int _heldLength;
    private bool _released;
    private bool _ticketDone;
    private long _handshakeBytes;
    private string? _failure;
    private bool _disposed;

    /// <summary>Creates a session that will handshake as a server with <paramref name="credentials"/>.</summary>
    /// <param name="credentials">The vhost's certificates (shared, built once).</param>
    /// <param name="applicationProtocols">ALPN names we speak, most preferred first (e.g. "h2", "http/1.1"); empty to ignore ALPN.</param>
    /// <param name="keyExchange">Who computes P-256 ECDH (default .NET).</param>
    /// <param name="maxHandshakeBytes">Bound on the bytes accepted before the handshake completes.</param>
    /// <param name="tickets">Session-ticket keys for TLS 1.3 resumption (null: no tickets issued or accepted).</param>
    /// <param name="vhost">The vhost the connection was routed to (tickets are bound to it); required for tickets.</param>
    public BcTlsSession(
        BcServerCredentials credentials,
        IReadOnlyList<string> applicationProtocols,
        BcKeyExchangeImplementation keyExchange = BcKeyExchangeImplementation.DotNet,
        int maxHandshakeBytes = DefaultMaxHandshakeBytes,
        SessionTicketKeys? tickets = null,
        string? vhost = null)
    {
        ArgumentNullException.ThrowIfNull(credentials);
        ArgumentNullException.ThrowIfNull(applicationProtocols);
        foreach (string protocol in applicationProtocols)
        {
            if (string.IsNullOrEmpty(protocol) || protocol.Length > 255 || protocol.AsSpan().ContainsAnyExceptInRange('\u0021', '\u007E'))
                throw new ArgumentException($"invalid ALPN protocol name '{protocol}'", nameof(applicationProtocols));
        }

        MaxHandshakeBytes = maxHandshakeBytes;
        _crypto = new DotNetTlsCrypto(keyExchange);
        _server = new DispatchTlsServer(_crypto, credentials, applicationProtocols, tickets, vhost);
        _protocol = new DispatchServerProtocol();
        _protocol.Accept(_server);
    }

    /// <summary>Bound on the bytes accepted before the handshake completes.</summary>
    public int MaxHandshakeBytes { get; }

    /// <summary>True once the handshake is complete (both Finished messages exchanged).</summary>
    public bool HandshakeComplete => _server.HandshakeComplete;

    /// <summary>True once the session is closed: by us (<see cref="Close"/>), by the peer's close_notify, by an error, or by the hand-off.</summary>
    public bool IsClosed
    {
        get
        {
            lock (_sync)
                return _disposed || _protocol.IsClosed || _failure is not null;
        }
    }

    /// <summary>True when the handshake resumed a session from one of our tickets (TLS 1.3, PSK with (EC)DHE).</summary>
    public bool Resumed => _server.HandshakeComplete && _server.Resumed;

    /// <summary>True when the client offered a ticket (whether or not it was accepted).</summary>
    public bool TicketOffered => _server.PskOffered;

    /// <summary>True when a NewSessionTicket was sent after the handshake.</summary>
    public bool TicketIssued { get; private set; }

    /// <summary>True when the peer sent close_notify.</summary>
    public bool CloseNotifyReceived => _server.CloseNotifyReceived;

    /// <summary>The ALPN protocol chosen, or null when the client offered none (or we speak none).</summary>
    public string? ApplicationProtocol => _server.SelectedApplicationProtocol;

    /// <summary>The negotiated cipher suite code point, or -1 before the ServerHello.</summary>
    public int CipherSuite => _server.SelectedCipherSuite;

    /// <summary>IANA name of the negotiated cipher suite (e.g. TLS_AES_128_GCM_SHA256), or null before the ServerHello.</summary>
    public string? CipherSuiteName => CipherSuiteNames.IanaName(_server.SelectedCipherSuite);

    /// <summary>"TLSv1.3" or "TLSv1.2" once a version is agreed, else null.</summary>
    public string? ProtocolVersion => _server.SelectedVersion is not { } version ? null
        : TlsUtilities.IsTlsV13(version) ? "TLSv1.3" : "TLSv1.2";

    /// <summary>The kind of certificate presented, once chosen.</summary>
    public BcKeyType? CertificateKeyType => _server.SelectedKeyType;

    /// <summary>The signature scheme of the ServerKeyExchange or CertificateVerify (e.g. 0x0403, 0x0804), once chosen.</summary>
    public ushort? SignatureScheme => _server.SelectedSignature is { } s ? (ushort)Org.BouncyCastle.Tls.SignatureScheme.From(s) : null;

    /// <summary>The alert we sent (fatal, or the first warning), if any.</summary>
    public byte? AlertSent => (byte?)_server.AlertSent;

    /// <summary>The last non-close_notify alert the peer sent, if any.</summary>
    public byte? AlertReceived => (byte?)_server.AlertReceived;

    /// <summary>Why the session failed, if it did.</summary>
    public string? FailureReason
    {
        get
        {
            lock (_sync)
                return _failure;
        }
    }

    /// <summary>Bytes waiting to be sent to the network.</summary>
    public int OutputAvailable
    {
        get
        {
            lock (_sync)
                return _disposed ? 0 : _protocol.GetAvailableOutputBytes();
        }
    }

    /// <summary>Decrypted application bytes waiting to be read.</summary>
    public int PlaintextAvailable
    {
        get
        {
            lock (_sync)
                return _disposed ? 0 : _protocol.GetAvailableInputBytes();
        }
    }

    /// <summary>Ciphertext received after the record that completed the handshake, not yet given to BouncyCastle.</summary>
    public int HeldCiphertextLength
    {
        get
        {
            lock (_sync)
                return _heldLength;
        }
    }

    /// <summary>
    /// Processes bytes received from the network. Before the handshake completes, complete records are given to
    /// BouncyCastle one at a time and a partial record is kept; bytes after the record that completes the handshake
    /// are held (see <see cref="ReleaseHeldInput"/>). Afterwards check <see cref="OutputAvailable"/> and
    /// <see cref="PlaintextAvailable"/>.
    /// </summary>
    /// <exception cref="BcTlsException">The connection failed; an alert may be waiting in the output: send it, then close.</exception>
    public void Offer(byte[] buffer, int offset, int count)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(offset, buffer.Length - count);
        if (count == 0)
            return;
        lock (_sync)
        {
            ThrowIfUnusable();
            if (_released)
            {
                OfferToEngine(buffer, offset, count);
                return;
            }

            _handshakeBytes += count;
            if (_handshakeBytes > MaxHandshakeBytes)
                throw Fail(_server.HandshakeComplete ? $"more than {MaxHandshakeBytes} bytes held undecrypted past the handshake" : $"more than {MaxHandshakeBytes} bytes received before the handshake completed", null);

            while (count > 0 && !_server.HandshakeComplete)
            {
                if (_recordFilled == 0 && count >= HeaderLength && RecordLength(buffer.AsSpan(offset)) <= MaxRecordLength
                    && count >= HeaderLength + RecordLength(buffer.AsSpan(offset)))
                {
                    // A whole record in the caller's buffer: no copy.
                    int whole = HeaderLength + RecordLength(buffer.AsSpan(offset));
                    OfferToEngine(buffer, offset, whole);
                    offset += whole;
                    count -= whole;
                    continue;
                }

                _record ??= KeptArrayPool.Instance.Rent(HeaderLength + MaxRecordLength);
                int want = _recordFilled < HeaderLength ? HeaderLength - _recordFilled : HeaderLength + RecordLength(_record) - _recordFilled;
                int take = Math.Min(want, count);
                buffer.AsSpan(offset, take).CopyTo(_record.AsSpan(_recordFilled));
                _recordFilled += take;
                offset += take;
                count -= take;
                if (_recordFilled == HeaderLength && RecordLength(_record) > MaxRecordLength)
                {
                    // BouncyCastle refuses an announced length beyond its limit (record_overflow) from the header alone.
                    OfferToEngine(_record, 0, HeaderLength);
                    throw Fail($"a record of {RecordLength(_record)} bytes during the handshake (at most {MaxRecordLength})", null);
                }

                if (_recordFilled >= HeaderLength && _recordFilled == HeaderLength + RecordLength(_record))
                {
                    _recordFilled = 0;
                    OfferToEngine(_record, 0, HeaderLength + RecordLength(_record));
                }
            }

            if (_server.HandshakeComplete)
                ReturnRecordBuffer();
            if (count > 0)
            {
                // Past the record that completed the handshake: ciphertext of the next phase, held as it came.
                _held ??= KeptArrayPool.Instance.Rent(Math.Max(count, 4096));
                if (_heldLength + count > _held.Length)
                {
                    byte[] larger = KeptArrayPool.Instance.Rent(_heldLength + count);
                    _held.AsSpan(0, _heldLength).CopyTo(larger);
                    KeptArrayPool.Instance.Return(_held, clearArray: true);
                    _held = larger;
                }

                buffer.AsSpan(offset, count).CopyTo(_held.AsSpan(_heldLength));
                _heldLength += count;
            }
        }
    }

    /// <summary>Processes bytes received from the network (copied once into a scratch buffer; prefer the array overload).</summary>
    /// <exception cref="BcTlsException">The connection failed; send the pending output, then close.</exception>
    public void Offer(ReadOnlySpan<byte> fromNetwork)
    {
        while (!fromNetwork.IsEmpty)
        {
            lock (_sync)
            {
                byte[] scratch = Scratch();
                int n = Math.Min(scratch.Length, fromNetwork.Length);
                fromNetwork[..n].CopyTo(scratch);
                Offer(scratch, 0, n);
                fromNetwork = fromNetwork[n..];
            }
        }
    }

    /// <summary>
    /// After the handshake: gives BouncyCastle the ciphertext held past the handshake and everything offered from
    /// now on (the plaintext proxy's path). Not to be called on a session that is to be handed off.
    /// </summary>
    /// <exception cref="BcTlsException">A held record failed to decrypt.</exception>
    public void ReleaseHeldInput()
    {
        lock (_sync)
        {
            ThrowIfUnusable();
            if (!_server.HandshakeComplete)
                throw new InvalidOperationException("the handshake is not complete");
            if (_released)
                return;
            _released = true;
            if (_held is null)
                return;
            byte[] held = _held;
            int length = _heldLength;
            _held = null;
            _heldLength = 0;
            try
            {
                if (length > 0)
                    OfferToEngine(held, 0, length);
            }
            finally
            {
                KeptArrayPool.Instance.Return(held, clearArray: true);
            }
        }
    }

    /// <summary>
    /// After the handshake, for a session that is still to be handed off: gives BouncyCastle the next complete record
    /// held past the handshake (it decrypts it, advancing the read sequence number; read the plaintext with
    /// <see cref="ReadPlaintext(byte[], int, int)"/>), and keeps the rest held. The dispatcher reads the first request
    /// head of an identity vhost this way, one record at a time, so that the session can still be exported at the
    /// record boundary after it (<see cref="TryExportForHandOff"/>: the held remainder stays ciphertext).
    /// </summary>
    /// <returns>False when no complete record is held (offer more bytes first).</returns>
    /// <exception cref="BcTlsException">The record failed (bad MAC, oversized, an alert): send the output, then close.</exception>
    public bool TryDecryptHeldRecord()
    {
        lock (_sync)
        {
            ThrowIfUnusable();
            if (!_server.HandshakeComplete || _released)
                throw new InvalidOperationException("records are decrypted one by one only after the handshake, before any release");
            if (_held is null || _heldLength < HeaderLength)
                return false;
            int length = RecordLength(_held);
            if (length > MaxRecordLength)
            {
                OfferToEngine(_held, 0, HeaderLength);
                throw Fail($"a record of {length} bytes (at most {MaxRecordLength})", null);
            }

            int whole = HeaderLength + length;
            if (_heldLength < whole)
                return false;
            OfferToEngine(_held, 0, whole);
            _held.AsSpan(whole, _heldLength - whole).CopyTo(_held);
            _held.AsSpan(_heldLength - whole, whole).Clear();
            _heldLength -= whole;
            _handshakeBytes -= whole;
            return true;
        }
    }

    /// <summary>
    /// Exports the session for the hand-off: the traffic secrets (TLS 1.3) or write keys and IVs (TLS 1.2), both
    /// sequence numbers, version and suite, and the ciphertext received past the handshake. Call it once the
    /// handshake is complete and its output sent. The session stays usable (so that a 503 can still be written
    /// through it when no worker takes the connection; the exported state is then stale and must be dropped);
    /// once the state has been handed over, dispose the session so nothing of the connection stays here.
    /// </summary>
    /// <param name="state">The session state for <see cref="Dispatch.Wire.ConnectionMode.HandedTls"/>.</param>
    /// <param name="remainingCiphertext">The bytes received after the record that completed the handshake (a copy).</param>
    /// <returns>False (and the session untouched) when the handshake is not complete, output is still waiting, plaintext was already released, or decrypted plaintext is still unread.</returns>
    public bool TryExportForHandOff(out TlsSessionState? state, out ReadOnlyMemory<byte> remainingCiphertext)
    {
        state = null;
        remainingCiphertext = ReadOnlyMemory<byte>.Empty;
        lock (_sync)
        {
            if (_disposed || _failure is not null || _released || !_server.HandshakeComplete || _protocol.IsClosed
                || _protocol.GetAvailableOutputBytes() > 0 || _protocol.GetAvailableInputBytes() > 0 || _server.Parameters is not { } parameters || _crypto.LastCipher is not { } cipher)
                return false;

            int suite = parameters.CipherSuite;
            if (TlsUtilities.IsTlsV13(parameters.NegotiatedVersion))
            {
                if (parameters.TrafficSecretClient is not DotNetTlsSecret client || parameters.TrafficSecretServer is not DotNetTlsSecret server)
                    return false;
                state = new TlsSessionState(TlsSessionState.Tls13, (ushort)suite, client.Export(), server.Export(), [], [], cipher.NextReadSequence, cipher.NextWriteSequence);
            }
            else
            {
                state = new TlsSessionState(TlsSessionState.Tls12, (ushort)suite, (byte[])cipher.ReadKey.Clone(), (byte[])cipher.WriteKey.Clone(), cipher.ReadIv, cipher.WriteIv, cipher.NextReadSequence, cipher.NextWriteSequence);
            }

            remainingCiphertext = _heldLength == 0 ? ReadOnlyMemory<byte>.Empty : _held.AsSpan(0, _heldLength).ToArray();
        }

        return true;
    }

    /// <summary>Takes up to <paramref name="count"/> bytes to send to the network.</summary>
    public int ReadOutputToNetwork(byte[] buffer, int offset, int count)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        lock (_sync)
            return _disposed ? 0 : _protocol.ReadOutput(buffer, offset, count);
    }

    /// <summary>Takes bytes to send to the network into <paramref name="destination"/>.</summary>
    public int ReadOutputToNetwork(Span<byte> destination)
    {
        lock (_sync)
        {
            if (_disposed)
                return 0;
            byte[] scratch = Scratch();
            int total = 0;
            while (total < destination.Length)
            {
                int n = _protocol.ReadOutput(scratch, 0, Math.Min(scratch.Length, destination.Length - total));
                if (n == 0)
                    break;
                scratch.AsSpan(0, n).CopyTo(destination[total..]);
                total += n;
            }

            return total;
        }
    }

    /// <summary>Reads decrypted application bytes; 0 when none are waiting.</summary>
    public int ReadPlaintext(byte[] buffer, int offset, int count)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        lock (_sync)
        {
            if (_disposed || _protocol.GetAvailableInputBytes() == 0)
                return 0;
            return _protocol.ReadInput(buffer, offset, count);
        }
    }

    /// <summary>Reads decrypted application bytes into <paramref name="destination"/>; 0 when none are waiting.</summary>
    public int ReadPlaintext(Span<byte> destination)
    {
        lock (_sync)
        {
            byte[] scratch = Scratch();
            int total = 0;
            while (total < destination.Length)
            {
                int n = ReadPlaintext(scratch, 0, Math.Min(scratch.Length, destination.Length - total));
                if (n == 0)
                    break;
                scratch.AsSpan(0, n).CopyTo(destination[total..]);
                total += n;
            }

            return total;
        }
    }

    /// <summary>Encrypts application bytes (after the handshake); the records appear in the output.</summary>
    /// <exception cref="BcTlsException">The connection is closed or failed.</exception>
    public void WritePlaintext(byte[] buffer, int offset, int count)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        if (count == 0)
            return;
        lock (_sync)
        {
            ThrowIfUnusable();
            if (!_server.HandshakeComplete)
                throw new InvalidOperationException("the handshake is not complete");
            try
            {
                _protocol.WriteApplicationData(buffer, offset, count);
            }
            catch (Exception e) when (e is IOException or InvalidOperationException)
            {
                throw Fail(null, e);
            }
        }
    }

    /// <summary>Encrypts application bytes (copied once into a scratch buffer; prefer the array overload).</summary>
    public void WritePlaintext(ReadOnlySpan<byte> plaintext)
    {
        while (!plaintext.IsEmpty)
        {
            lock (_sync)
            {
                byte[] scratch = Scratch();
                int n = Math.Min(scratch.Length, plaintext.Length);
                plaintext[..n].CopyTo(scratch);
                WritePlaintext(scratch, 0, n);
                plaintext = plaintext[n..];
            }
        }
    }

    /// <summary>
    /// Tells the session the peer closed its side of TCP. Returns true when that was a clean end (after
    /// close_notify); false for a truncation or an end during the handshake.
    /// </summary>
    public bool NotifyEndOfInput()
    {
        lock (_sync)
        {
            if (_disposed)
                return false;
            if (_protocol.IsClosed)
                return _server.CloseNotifyReceived;
            try
            {
                _protocol.CloseInput();
            }
            catch (Exception e) when (e is IOException or InvalidOperationException)
            {
                _failure ??= HandshakeComplete ? "connection closed without close_notify" : "connection closed during the handshake";
                return false;
            }

            return _server.CloseNotifyReceived;
        }
    }

    /// <summary>Sends close_notify (it appears in the output) and closes the session. Idempotent.</summary>
    public void Close()
    {
        lock (_sync)
        {
            if (_disposed || _protocol.IsClosed)
                return;
            try
            {
                _protocol.Close();
            }
            catch (IOException)
            {
                // Already failed: nothing more to say to the peer.
            }
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        lock (_sync)
        {
            if (_disposed)
                return;
            _disposed = true;
            _crypto.Dispose();
            _protocol.ResumptionMasterSecret?.Destroy();
            ReturnRecordBuffer();
            if (_held is not null)
            {
                KeptArrayPool.Instance.Return(_held, clearArray: true);
                _held = null;
                _heldLength = 0;
            }

            if (_scratch is not null)
            {
                KeptArrayPool.Instance.Return(_scratch, clearArray: true);
                _scratch = null;
            }
        }
    }

    private static int RecordLength(ReadOnlySpan<byte> header) => (header[3] << 8) | header[4];

    private void OfferToEngine(byte[] buffer, int offset, int count)
    {
        try
        {
            _protocol.OfferInput(buffer, offset, count);
            if (_server.HandshakeComplete && !_ticketDone)
            {
                _ticketDone = true;
                IssueTicket();
            }
        }
        catch (Exception e) when (e is IOException or InvalidOperationException)
        {
            throw Fail(null, e);
        }
    }

    /// <summary>
    /// TLS 1.3: one NewSessionTicket (RFC 8446 4.6.1) right after the handshake, under the server's application key
    /// (its write sequence 0, so a hand-off follows with 1). PSK = HKDF-Expand-Label(resumption_master_secret,
    /// "resumption", ticket_nonce, Hash.length), sealed with the vhost and suite into the ticket.
    /// </summary>
    private void IssueTicket()
    {
        if (_server.Tickets is not { } tickets || !_server.ClientAcceptsTickets || _protocol.ResumptionMasterSecret is not { } resumption
            || _server.Parameters is not { } parameters || !TlsUtilities.IsTlsV13(parameters.NegotiatedVersion))
            return;
        byte[] nonce = System.Security.Cryptography.RandomNumberGenerator.GetBytes(8);
        uint ageAdd = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4));
        var psk = (DotNetTlsSecret)resumption.DeriveUsingPrf(parameters.PrfAlgorithm, "resumption", nonce, parameters.PrfHashLength);
        byte[] pskBytes = psk.Export();
        psk.Destroy();
        byte[] ticket = tickets.Keys.Issue(tickets.Vhost, parameters.CipherSuite, pskBytes, ageAdd);
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(pskBytes);

        // uint32 lifetime | uint32 age_add | opaque nonce<0..255> | opaque ticket<1..2^16-1> | Extension extensions<0..2^16-2>
        int bodyLength = 4 + 4 + 1 + nonce.Length + 2 + ticket.Length + 2;
        byte[] message = new byte[4 + bodyLength];
        var m = message.AsSpan();
        m[0] = 4; // new_session_ticket
        m[1] = (byte)(bodyLength >> 16);
        m[2] = (byte)(bodyLength >> 8);
        m[3] = (byte)bodyLength;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(m[4..], (uint)SessionTicketKeys.Lifetime.TotalSeconds);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(m[8..], ageAdd);
        m[12] = (byte)nonce.Length;
        nonce.CopyTo(m[13..]);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(m[(13 + nonce.Length)..], (ushort)ticket.Length);
        ticket.CopyTo(m[(15 + nonce.Length)..]);
        _protocol.SendHandshakeMessage(message);
        TicketIssued = true;
    }

    private void ReturnRecordBuffer()
    {
        if (_record is not null)
        {
            KeptArrayPool.Instance.Return(_record, clearArray: true);
            _record = null;
            _recordFilled = 0;
        }
    }

    private byte[] Scratch() => _scratch ??= KeptArrayPool.Instance.Rent(16 * 1024);

    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_failure is not null)
            throw new BcTlsException("the TLS session has failed: " + _failure, AlertSent, AlertReceived, null);
    }

    private BcTlsException Fail(string? reason, Exception? cause)
    {
        string text = reason
            ?? (_server.AlertReceived is { } received ? $"peer sent fatal alert {TlsAlertNames.Name(received)}"
            : _server.AlertSent is { } sent ? $"sent alert {TlsAlertNames.Name(sent)}: {_server.Reason ?? _server.AlertMessage + Describe(_server.AlertCause)}"
            : cause?.Message ?? "TLS failure");
        _failure ??= text;
        return new BcTlsException(text, AlertSent, AlertReceived, cause);
    }

    private static string Describe(Exception? cause) => cause is null ? "" : $" ({cause.GetType().Name}: {cause.Message})";
}
