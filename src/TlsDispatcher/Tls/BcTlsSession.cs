using System.Buffers;
using Org.BouncyCastle.Crypto.Prng;
using Org.BouncyCastle.Crypto.Tls;
using Org.BouncyCastle.Security;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>A TLS failure: the alert we sent or received (if any) and BouncyCastle's reason.</summary>
public sealed class BcTlsException : IOException
{
    /// <summary>Creates the exception.</summary>
    public BcTlsException(string message, byte? alertSent, byte? alertReceived, Exception? innerException)
        : base(message, innerException)
    {
        AlertSent = alertSent;
        AlertReceived = alertReceived;
    }

    /// <summary>Creates the exception.</summary>
    public BcTlsException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public BcTlsException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public BcTlsException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The alert description we sent (its bytes are waiting in the session's output), if any.</summary>
    public byte? AlertSent { get; }

    /// <summary>The fatal alert description the peer sent, if any.</summary>
    public byte? AlertReceived { get; }
}

/// <summary>
/// One server-side TLS 1.2 connection run by BouncyCastle's non-blocking <see cref="TlsServerProtocol"/>,
/// with .NET doing the cryptography (see <see cref="DotNetTlsCipherFactory"/>, <see cref="DotNetSignerCredentials"/>,
/// <see cref="DotNetEcdheKeyExchange"/>). It does no I/O: feed it what the network delivered
/// (<see cref="Offer(byte[], int, int)"/>), send what it produces (<see cref="ReadOutputToNetwork(byte[], int, int)"/>),
/// and exchange plaintext with <see cref="ReadPlaintext(byte[], int, int)"/> and <see cref="WritePlaintext(byte[], int, int)"/>.
/// Every method takes an internal lock, so one task may read while another writes.
/// </summary>
/// <remarks>
/// <para><b>Configuration.</b> TLS 1.2 only (BouncyCastle 1.8.10's default maximum is TLS 1.1, so both
/// bounds are overridden); cipher suites ECDHE_ECDSA / ECDHE_RSA with AES_128_GCM_SHA256,
/// AES_256_GCM_SHA384 or CHACHA20_POLY1305_SHA256 (BouncyCastle's DRAFT_ names carry the final code
/// points 0xCCA9/0xCCA8); the P-256 group only; no client certificates; no RSA key transport; no session
/// tickets or resumption (the session_ticket extension is never acknowledged); renegotiation refused:
/// BouncyCastle 1.8.10 ends the connection with a fatal unexpected_message on any handshake message
/// after the handshake (checked with openssl's "R" command), and the record cipher caps decrypted
/// handshake bytes so an announced huge message cannot be buffered; clients must signal RFC 5746
/// secure renegotiation (renegotiation_info or the SCSV, as every current client does) or get
/// handshake_failure (BouncyCastle's default); a client whose supported_versions lacks TLS 1.2 gets
/// a protocol_version alert; ALPN (which
/// BouncyCastle 1.8.10 lacks) is negotiated by hand with server preference, and a client that
/// offers ALPN but none of ours gets no_application_protocol (RFC 7301).</para>
/// <para><b>Advisories against Portable.BouncyCastle 1.8.10 and why this configuration does not run the affected code.</b></para>
/// <list type="bullet">
/// <item><description>GHSA-8xfc-gm6g-vgpv, excessive CPU when parsing crafted X.509 certificates: the
/// only certificates BouncyCastle parses here are our own (from the master, at load time). No
/// CertificateRequest is sent, and a Certificate message from a client is refused, so no
/// peer-supplied certificate is ever parsed.</description></item>
/// <item><description>GHSA-m44j-cfrm-g8qc, a loop on a crafted signature or public key: the server
/// verifies no signature of the peer (no client certificates, hence no CertificateVerify). The
/// client's only public key, its ECDHE point, is imported and checked by .NET/OpenSSL
/// (<see cref="DotNetEcdheKeyExchange"/>), not by BouncyCastle's EC code. (The
/// <see cref="BcKeyExchangeImplementation.BouncyCastle"/> comparison mode does decode it in
/// BouncyCastle; it is not the default.)</description></item>
/// <item><description>GHSA-v435-xc8x-wvr9, RSA key-exchange timing ("Marvin"): RSA key transport
/// suites are never offered; RSA keys are used only to sign (PKCS#1 v1.5 in OpenSSL), never to decrypt.</description></item>
/// </list>
/// <para>BouncyCastle still parses the ClientHello, ClientKeyExchange and Finished messages and the
/// record layer; the dispatcher's own <see cref="ClientHelloParser"/> has already bounded and validated
/// the ClientHello, and <see cref="MaxHandshakeBytes"/> bounds everything before the handshake completes.</para>
/// </remarks>
public sealed class BcTlsSession : IDisposable
{
    /// <summary>Default bound on the bytes accepted from the client before the handshake completes.</summary>
    public const int DefaultMaxHandshakeBytes = 64 * 1024;

    private readonly Lock _sync = new();
    private readonly TlsServerProtocol _protocol;
    private readonly DispatchTlsServer _server;
    private byte[]? _scratch;
    private long _handshakeBytes;
    private string? _failure;
    private bool _disposed;

    /// <summary>Creates a session that will handshake as a server with <paramref name="credentials"/>.</summary>
    /// <param name="credentials">The vhost's certificates (shared, built once).</param>
    /// <param name="applicationProtocols">ALPN names we speak, most preferred first (e.g. "h2", "http/1.1"); empty to ignore ALPN.</param>
    /// <param name="keyExchange">Who computes ECDHE (default .NET).</param>
    /// <param name="maxHandshakeBytes">Bound on the bytes accepted before the handshake completes.</param>
    public BcTlsSession(
        BcServerCredentials credentials,
        IReadOnlyList<string> applicationProtocols,
        BcKeyExchangeImplementation keyExchange = BcKeyExchangeImplementation.DotNet,
        int maxHandshakeBytes = DefaultMaxHandshakeBytes)
    {
        ArgumentNullException.ThrowIfNull(credentials);
        ArgumentNullException.ThrowIfNull(applicationProtocols);
        foreach (string protocol in applicationProtocols)
        {
            if (string.IsNullOrEmpty(protocol) || protocol.Length > 255 || protocol.AsSpan().ContainsAnyExceptInRange('\0', '\u00FF'))
                throw new ArgumentException($"invalid ALPN protocol name '{protocol}'", nameof(applicationProtocols));
        }

        MaxHandshakeBytes = maxHandshakeBytes;
        _server = new DispatchTlsServer(credentials, applicationProtocols, keyExchange);
        _protocol = new TlsServerProtocol(new SecureRandom(new CryptoApiRandomGenerator()));
        _protocol.Accept(_server);
    }

    /// <summary>Bound on the bytes accepted before the handshake completes.</summary>
    public int MaxHandshakeBytes { get; }

    /// <summary>True once both Finished messages are exchanged; plaintext may flow.</summary>
    public bool HandshakeComplete => _server.HandshakeComplete;

    /// <summary>True once the session is closed: by us (<see cref="Close"/>), by the peer's close_notify, or by an error.</summary>
    public bool IsClosed
    {
        get
        {
            lock (_sync)
                return _protocol.IsClosed || _failure is not null;
        }
    }

    /// <summary>True when the peer sent close_notify.</summary>
    public bool CloseNotifyReceived => _server.CloseNotifyReceived;

    /// <summary>The ALPN protocol chosen, or null when the client offered none (or we speak none).</summary>
    public string? ApplicationProtocol => _server.SelectedApplicationProtocol;

    /// <summary>The negotiated cipher suite code point, or -1 before the ServerHello.</summary>
    public int CipherSuite => _server.SelectedCipherSuite;

    /// <summary>IANA name of the negotiated cipher suite (e.g. TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256), or null before the ServerHello.</summary>
    public string? CipherSuiteName => CipherSuiteNames.IanaName(_server.SelectedCipherSuite);

    /// <summary>"TLSv1.2" once a version is agreed (the only one), else null.</summary>
    public string? ProtocolVersion => _server.SelectedCipherSuite >= 0 ? "TLSv1.2" : null;

    /// <summary>The kind of certificate presented, once chosen.</summary>
    public BcKeyType? CertificateKeyType => _server.SelectedKeyType;

    /// <summary>The ServerKeyExchange signature algorithm as a TLS SignatureScheme value (e.g. 0x0403), once chosen.</summary>
    public ushort? SignatureScheme => _server.SelectedSignature is { } s ? (ushort)((s.Hash << 8) | s.Signature) : null;

    /// <summary>The alert we sent (fatal, or the first warning), if any.</summary>
    public byte? AlertSent => _server.AlertSent;

    /// <summary>The last non-close_notify alert the peer sent, if any.</summary>
    public byte? AlertReceived => _server.AlertReceived;

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
                return _protocol.GetAvailableOutputBytes();
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

    /// <summary>
    /// Processes bytes received from the network (BouncyCastle's OfferInput). Complete records are
    /// processed now, a partial record is kept. Afterwards check <see cref="OutputAvailable"/> and
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
            if (!_server.HandshakeComplete)
            {
                _handshakeBytes += count;
                if (_handshakeBytes > MaxHandshakeBytes)
                    throw Fail($"more than {MaxHandshakeBytes} bytes received before the handshake completed", null);
            }

            try
            {
                _protocol.OfferInput(buffer, offset, count);
            }
            catch (Exception e)
            {
                throw Fail(null, e);
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

    /// <summary>Takes up to <paramref name="count"/> bytes to send to the network.</summary>
    public int ReadOutputToNetwork(byte[] buffer, int offset, int count)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        lock (_sync)
            return _protocol.ReadOutput(buffer, offset, count);
    }

    /// <summary>Takes bytes to send to the network into <paramref name="destination"/>.</summary>
    public int ReadOutputToNetwork(Span<byte> destination)
    {
        lock (_sync)
        {
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
                _protocol.OfferOutput(buffer, offset, count);
            }
            catch (Exception e)
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
            _server.DisposeResources();
            if (_scratch is not null)
            {
                ArrayPool<byte>.Shared.Return(_scratch, clearArray: true);
                _scratch = null;
            }
        }
    }

    private byte[] Scratch() => _scratch ??= ArrayPool<byte>.Shared.Rent(16 * 1024);

    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_failure is not null)
            throw new BcTlsException("the TLS session has failed: " + _failure, _server.AlertSent, _server.AlertReceived, null);
    }

    private BcTlsException Fail(string? reason, Exception? cause)
    {
        string text = reason
            ?? (_server.AlertReceived is { } received ? $"peer sent fatal alert {AlertNames.Name(received)}"
            : _server.AlertSent is { } sent ? $"sent alert {AlertNames.Name(sent)}: {_server.Reason ?? _server.AlertMessage + Describe(_server.AlertCause)}"
            : cause?.Message ?? "TLS failure");
        _failure ??= text;
        return new BcTlsException(text, _server.AlertSent, _server.AlertReceived, cause);
    }

    private static string Describe(Exception? cause) => cause is null ? "" : $" ({cause.GetType().Name}: {cause.Message})";
}

/// <summary>Names of the cipher suites and alerts this server uses, for logs and connection metadata.</summary>
public static class CipherSuiteNames
{
    /// <summary>IANA name of one of our cipher suites, the hex code point otherwise, null for a negative value.</summary>
    public static string? IanaName(int cipherSuite) => cipherSuite switch
    {
        < 0 => null,
        0xC02B => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xC02C => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xCCA9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0xC02F => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xC030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xCCA8 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        _ => $"0x{cipherSuite:X4}",
    };
}

/// <summary>Alert names (RFC 5246 7.2, RFC 7301).</summary>
public static class AlertNames
{
    /// <summary>The name of an alert description, or its number.</summary>
    public static string Name(byte description) => description switch
    {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        47 => "illegal_parameter",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        120 => "no_application_protocol",
        _ => description.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
