namespace Dispatch.Wire.Tls;

/// <summary>
/// The state of a TLS session whose handshake the dispatcher completed, handed to a worker with the client's socket so
/// that the worker runs the record layer from then on (<see cref="ConnectionMode.HandedTls"/>).
/// </summary>
/// <remarks>
/// <para>Wire layout (appended to <see cref="Connection"/> when its mode is <see cref="ConnectionMode.HandedTls"/>):</para>
/// <code>
/// u16 version (0x0304 TLS 1.3, 0x0303 TLS 1.2) | u16 cipher suite (IANA code point) |
/// blob client secret | blob server secret | blob client IV | blob server IV |
/// u64 read sequence number (the next record from the client) | u64 write sequence number (the next record to it)
/// </code>
/// <para>TLS 1.3: the secrets are client_application_traffic_secret_N and server_application_traffic_secret_N (32 bytes
/// for SHA-256 suites, 48 for SHA-384); the IVs are empty (derived from the secrets, RFC 8446 7.3). TLS 1.2 (AEAD
/// suites only): the secrets are client_write_key and server_write_key (16 or 32 bytes), the IVs client_write_IV and
/// server_write_IV (4 bytes of salt for AES-GCM, RFC 5288; 12 bytes for ChaCha20-Poly1305, RFC 7905).</para>
/// <para>The bytes the dispatcher read past the handshake travel in <see cref="Connection.Initial"/> as ciphertext,
/// never decrypted: the dispatcher feeds the handshake engine one record at a time and stops at the record that
/// completes the handshake. Nothing is lost or repeated.</para>
/// <para>Who holds it: the dispatcher until it has sent the message (then it forgets it: no descriptor, no buffer, no
/// key); the worker of the connection's pool afterwards. Never a private key, never a session-ticket key.</para>
/// </remarks>
public sealed class TlsSessionState
{
    /// <summary>TLS 1.3 (0x0304).</summary>
    public const ushort Tls13 = 0x0304;

    /// <summary>TLS 1.2 (0x0303).</summary>
    public const ushort Tls12 = 0x0303;

    /// <summary>The largest secret or key (SHA-384 secrets are 48 bytes).</summary>
    public const int MaxSecret = 64;

    /// <summary>The largest IV (12 bytes).</summary>
    public const int MaxIv = 16;

    public TlsSessionState(ushort version, ushort cipherSuite, byte[] clientSecret, byte[] serverSecret, byte[] clientIv, byte[] serverIv, ulong readSequence, ulong writeSequence)
    {
        ArgumentNullException.ThrowIfNull(clientSecret);
        ArgumentNullException.ThrowIfNull(serverSecret);
        ArgumentNullException.ThrowIfNull(clientIv);
        ArgumentNullException.ThrowIfNull(serverIv);
        Version = version;
        CipherSuite = cipherSuite;
        ClientSecret = clientSecret;
        ServerSecret = serverSecret;
        ClientIv = clientIv;
        ServerIv = serverIv;
        ReadSequence = readSequence;
        WriteSequence = writeSequence;
    }

    /// <summary>0x0304 or 0x0303.</summary>
    public ushort Version { get; }

    /// <summary>The negotiated cipher suite's code point (e.g. 0x1301 TLS_AES_128_GCM_SHA256, 0xC02B).</summary>
    public ushort CipherSuite { get; }

    /// <summary>TLS 1.3: client_application_traffic_secret; TLS 1.2: client_write_key.</summary>
    public byte[] ClientSecret { get; }

    /// <summary>TLS 1.3: server_application_traffic_secret; TLS 1.2: server_write_key.</summary>
    public byte[] ServerSecret { get; }

    /// <summary>TLS 1.2: client_write_IV; TLS 1.3: empty.</summary>
    public byte[] ClientIv { get; }

    /// <summary>TLS 1.2: server_write_IV; TLS 1.3: empty.</summary>
    public byte[] ServerIv { get; }

    /// <summary>The sequence number of the next record the client sends.</summary>
    public ulong ReadSequence { get; }

    /// <summary>The sequence number of the next record the server sends.</summary>
    public ulong WriteSequence { get; }

    /// <summary>Overwrites the secrets with zeros (once they have been turned into keys).</summary>
    public void Clear()
    {
        Array.Clear(ClientSecret);
        Array.Clear(ServerSecret);
        Array.Clear(ClientIv);
        Array.Clear(ServerIv);
    }

    public void Encode(ref WireWriter writer)
    {
        writer.U16(Version);
        writer.U16(CipherSuite);
        writer.Blob(ClientSecret);
        writer.Blob(ServerSecret);
        writer.Blob(ClientIv);
        writer.Blob(ServerIv);
        writer.I64((long)ReadSequence);
        writer.I64((long)WriteSequence);
    }

    /// <exception cref="WireException">An unknown version, or a field out of bounds.</exception>
    public static TlsSessionState Decode(ref WireReader reader)
    {
        var version = reader.U16();
        if (version is not (Tls13 or Tls12))
            throw new WireException($"unknown TLS version 0x{version:X4} in a handed session");
        var suite = reader.U16();
        var clientSecret = reader.Blob(MaxSecret).ToArray();
        var serverSecret = reader.Blob(MaxSecret).ToArray();
        var clientIv = reader.Blob(MaxIv).ToArray();
        var serverIv = reader.Blob(MaxIv).ToArray();
        if (clientSecret.Length == 0 || clientSecret.Length != serverSecret.Length || clientIv.Length != serverIv.Length)
            throw new WireException("a handed TLS session has empty or mismatched secrets");
        return new TlsSessionState(version, suite, clientSecret, serverSecret, clientIv, serverIv, (ulong)reader.I64(), (ulong)reader.I64());
    }
}
