namespace Dispatch.Wire;

// The dispatcher and a worker: connections handed over, and the worker's load. Wire layouts, one record per
// MessageType, each with its encoder and decoder side by side (MessageType.cs: the catalogue).

/// <summary>How the dispatcher hands a connection over.</summary>
public enum ConnectionMode : byte
{
    /// <summary>Plain HTTP: the client's socket itself, with the request head already read.</summary>
    PlainHttp = 1,

    /// <summary>TLS terminated in the dispatcher: a socketpair carrying plaintext.</summary>
    TerminatedTls = 2,

    /// <summary>TLS passthrough: the client's socket with the ClientHello already read.</summary>
    PassthroughTls = 3,

    /// <summary>
    /// TLS terminated by the dispatcher and the session handed over: the client's socket, the session's traffic
    /// secrets and sequence numbers (<see cref="Dispatch.Wire.Tls.TlsSessionState"/>), and the ciphertext already
    /// read past the handshake. The worker runs the record layer.
    /// </summary>
    HandedTls = 4,
}

/// <summary>Application protocol spoken on the handed connection.</summary>
public enum AppProtocol : byte
{
    Http1 = 1,
    Http2 = 2,
}

/// <summary>
/// u64 connection id | u8 mode | u8 protocol | string client | string local | opt string sni |
/// opt string tls protocol | opt string tls cipher | blob bytes already read (≤ 60000)
/// [mode HandedTls only: the session state, <see cref="Dispatch.Wire.Tls.TlsSessionState"/>'s layout
/// [then, only when not empty: blob plaintext (≤ 60000), application data the dispatcher already decrypted (the first
/// request head of an identity vhost), to be read before anything the record layer decrypts]].
/// Descriptor: the connection.
/// </summary>
public sealed record Connection(
    ulong ConnectionId,
    ConnectionMode Mode,
    AppProtocol Protocol,
    string Client,
    string Local,
    string? Sni,
    string? TlsProtocol,
    string? TlsCipher,
    ReadOnlyMemory<byte> Initial,
    Dispatch.Wire.Tls.TlsSessionState? Session = null,
    ReadOnlyMemory<byte> Plaintext = default) : IWireMessage<Connection>
{
    public const int MaxInitial = 60000;

    public static MessageType Type => MessageType.Connection;

    public static int DescriptorCount(Connection message) => 1;

    public void Encode(ref WireWriter writer)
    {
        writer.I64((long)ConnectionId);
        writer.U8((byte)Mode);
        writer.U8((byte)Protocol);
        writer.String(Client);
        writer.String(Local);
        writer.OptionalString(Sni);
        writer.OptionalString(TlsProtocol);
        writer.OptionalString(TlsCipher);
        writer.Blob(Initial.Span);
        if ((Mode == ConnectionMode.HandedTls) != (Session is not null))
            throw new InvalidOperationException("a session state travels with mode HandedTls, and only with it");
        Session?.Encode(ref writer);
        if (!Plaintext.IsEmpty)
        {
            if (Session is null || Plaintext.Length > MaxInitial)
                throw new InvalidOperationException("decrypted plaintext travels with mode HandedTls only, at most MaxInitial bytes");
            writer.Blob(Plaintext.Span);
        }
    }

    public static Connection Decode(ref WireReader reader)
    {
        var id = (ulong)reader.I64();
        var mode = reader.U8();
        if (mode is < 1 or > 4)
            throw new WireException($"unknown connection mode {mode}");
        var protocol = reader.U8();
        if (protocol is < 1 or > 2)
            throw new WireException($"unknown application protocol {protocol}");
        var client = reader.String(Limits.Name);
        var local = reader.String(Limits.Name);
        var sni = reader.OptionalString(Limits.Name);
        var tlsProtocol = reader.OptionalString(Limits.Name);
        var tlsCipher = reader.OptionalString(Limits.Name);
        var initial = reader.Blob(MaxInitial).ToArray();
        var session = mode == (byte)ConnectionMode.HandedTls ? Dispatch.Wire.Tls.TlsSessionState.Decode(ref reader) : null;
        var plaintext = session is not null && reader.Remaining > 0 ? reader.Blob(MaxInitial).ToArray() : [];
        return new Connection(id, (ConnectionMode)mode, (AppProtocol)protocol, client, local, sni, tlsProtocol, tlsCipher, initial, session, plaintext);
    }
}

/// <summary>
/// u32 open connections | u64 connections received so far. The dispatcher adds what it handed over
/// since (sent − received) to know the load without a race against messages in flight.
/// </summary>
public sealed record WorkerLoad(uint OpenConnections, ulong Received) : IWireMessage<WorkerLoad>
{
    public static MessageType Type => MessageType.WorkerLoad;

    public static int DescriptorCount(WorkerLoad message) => 0;

    public void Encode(ref WireWriter writer)
    {
        writer.U32(OpenConnections);
        writer.I64((long)Received);
    }

    public static WorkerLoad Decode(ref WireReader reader) => new(reader.U32(), (ulong)reader.I64());
}

/// <summary>
/// u16 n ≤ <see cref="MaxEntries"/>, n × <see cref="VhostTraffic"/>, each vhost at most once: what the worker served
/// per vhost since it started (cumulative), for the vhosts whose counts changed since its last report. A pool with
/// more vhosts sends several. The dispatcher believes only the vhosts of the worker's own pool.
/// </summary>
public sealed record WorkerTraffic(VhostTraffic[] Vhosts) : IWireMessage<WorkerTraffic>
{
    /// <summary>At most this many vhosts per message (128 entries of 255-byte names fit a datagram).</summary>
    public const int MaxEntries = 128;

    public static MessageType Type => MessageType.WorkerTraffic;

    public static int DescriptorCount(WorkerTraffic message) => 0;

    public void Encode(ref WireWriter writer)
    {
        writer.U16((ushort)Vhosts.Length);
        foreach (var v in Vhosts)
            v.Encode(ref writer);
    }

    public static WorkerTraffic Decode(ref WireReader reader)
    {
        int n = reader.U16();
        if (n > MaxEntries)
            throw new WireException($"{n} vhosts in one WorkerTraffic exceed the limit of {MaxEntries}");
        return new WorkerTraffic(VhostTraffic.Read(ref reader, n, "WorkerTraffic"));
    }
}
