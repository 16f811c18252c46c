using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Text;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>Outcome of <see cref="ClientHelloParser.TryParse(ReadOnlySpan{byte}, out ClientHelloInfo?, out int, out string?)"/>.</summary>
public enum ClientHelloResult
{
    /// <summary>The bytes so far are a valid prefix of a ClientHello; read more (see <c>bytesNeeded</c>).</summary>
    Incomplete,

    /// <summary>A complete, well-formed ClientHello was parsed.</summary>
    Ok,

    /// <summary>The stream does not start with a TLS handshake record (first byte not 22, or not TLS record version 3.x).</summary>
    NotTls,

    /// <summary>A TLS handshake record that is not a well-formed ClientHello (see <c>error</c>).</summary>
    Malformed,
}

/// <summary>What the dispatcher needs from a ClientHello to route a connection.</summary>
public sealed class ClientHelloInfo
{
    private readonly ushort[] _extensionTypes;

    internal ClientHelloInfo(
        int length,
        int recordCount,
        ushort recordVersion,
        ushort legacyVersion,
        int sessionIdLength,
        string? serverName,
        string[] applicationProtocols,
        ushort[] supportedVersions,
        ushort[] cipherSuites,
        ushort[] signatureAlgorithms,
        ushort[] supportedGroups,
        ushort[] extensionTypes)
    {
        Length = length;
        RecordCount = recordCount;
        RecordVersion = recordVersion;
        LegacyVersion = legacyVersion;
        SessionIdLength = sessionIdLength;
        ServerName = serverName;
        ApplicationProtocols = applicationProtocols;
        SupportedVersions = supportedVersions;
        CipherSuites = cipherSuites;
        SignatureAlgorithms = signatureAlgorithms;
        SupportedGroups = supportedGroups;
        _extensionTypes = extensionTypes;
        if (supportedVersions.Length > 0)
        {
            OffersTls12 = Array.IndexOf(supportedVersions, (ushort)0x0303) >= 0;
            OffersTls13 = Array.IndexOf(supportedVersions, (ushort)0x0304) >= 0;
        }
        else
        {
            // Without supported_versions (RFC 8446 4.2.1) the client offers legacy_version and below.
            OffersTls12 = legacyVersion >= 0x0303;
            OffersTls13 = false;
        }
    }

    /// <summary>Bytes of the input (record headers included) that carry the ClientHello. Bytes after it are not examined.</summary>
    public int Length { get; }

    /// <summary>Number of TLS records the ClientHello was spread over.</summary>
    public int RecordCount { get; }

    /// <summary>Version field of the first record header (0x0301 for most clients).</summary>
    public ushort RecordVersion { get; }

    /// <summary>ClientHello.legacy_version (0x0303 for TLS 1.2 and TLS 1.3 clients).</summary>
    public ushort LegacyVersion { get; }

    /// <summary>Length of legacy_session_id (0..32).</summary>
    public int SessionIdLength { get; }

    /// <summary>SNI host_name, validated, lower-cased, one trailing dot removed; null when the client sent no server_name.</summary>
    public string? ServerName { get; }

    /// <summary>ALPN protocol names in client order (bytes mapped 1:1 to chars, Latin-1); empty when no ALPN extension.</summary>
    public IReadOnlyList<string> ApplicationProtocols { get; }

    /// <summary>supported_versions in client order (GREASE values included); empty when the extension is absent.</summary>
    public IReadOnlyList<ushort> SupportedVersions { get; }

    /// <summary>True when the client offers TLS 1.2 (supported_versions, or legacy_version when that extension is absent).</summary>
    public bool OffersTls12 { get; }

    /// <summary>True when supported_versions contains TLS 1.3 (0x0304).</summary>
    public bool OffersTls13 { get; }

    /// <summary>Cipher suites in client order (GREASE and SCSV values included).</summary>
    public IReadOnlyList<ushort> CipherSuites { get; }

    /// <summary>signature_algorithms (SignatureScheme values) in client order; empty when absent.</summary>
    public IReadOnlyList<ushort> SignatureAlgorithms { get; }

    /// <summary>supported_groups in client order; empty when absent.</summary>
    public IReadOnlyList<ushort> SupportedGroups { get; }

    /// <summary>Extension types in the order the client sent them.</summary>
    public IReadOnlyList<ushort> ExtensionTypes => _extensionTypes;

    /// <summary>True when the client sent an extension of this type.</summary>
    public bool HasExtension(ushort extensionType) => Array.IndexOf(_extensionTypes, extensionType) >= 0;
}

/// <summary>
/// Parses a TLS ClientHello from the first bytes of a connection, without BouncyCastle (which has
/// no public ClientHello parser) and without allocating per byte: the input is walked in place,
/// duplicate extensions are found with a bit set on the stack, and the arrays and strings of the
/// result are created once at the end. It never throws on any input.
/// </summary>
/// <remarks>
/// <para>Wire layout (RFC 5246 6.2.1 and 7.4.1.2, RFC 8446 4.1.2 and 5.1, RFC 6066 3, RFC 7301 3.1):</para>
/// <code>
/// TLSPlaintext record, repeated until the handshake message is complete:
///   uint8   content_type            22 (handshake); every record of the ClientHello must be 22
///   uint16  legacy_record_version   0x03xx (0x0301 usually)
///   uint16  length                  1..16384 (zero-length handshake fragments are forbidden)
///   opaque  fragment[length]        consecutive slices of the handshake message
/// Handshake message (the concatenated fragments):
///   uint8   msg_type                1 (client_hello)
///   uint24  length                  length of the body below; at most 16384 here
///   ClientHello body:
///     uint16  legacy_version        0x0303 for TLS 1.2 and 1.3 clients
///     opaque  random[32]
///     uint8   session_id length     0..32, then that many bytes
///     uint16  cipher_suites length  even, at least 2, then uint16 suites
///     uint8   compression length    at least 1, then methods; must contain 0 (null)
///     uint16  extensions length     optional (absent only if the body ends here); must equal what is left
///       Extension: uint16 type, uint16 length, opaque data[length]; each type at most once
/// Extensions read here:
///   server_name (0):          uint16 list length (= ext length - 2, non-empty);
///                             entries: uint8 name_type, uint16 length, opaque name; exactly one type 0 (host_name)
///   supported_groups (10):    uint16 length (= ext length - 2, even, at least 2), uint16 groups
///   signature_algorithms (13): uint16 length (= ext length - 2, even, at least 2), uint16 schemes
///   ALPN (16):                uint16 list length (= ext length - 2, non-empty); entries: uint8 length (1..255), name
///   supported_versions (43):  uint8 length (= ext length - 1, even, at least 2), uint16 versions
/// </code>
/// <para>Nothing may follow the ClientHello inside its last record: a client sends nothing else
/// in a handshake record before the server's reply. Bytes after that record (a TLS 1.3 middlebox
/// ChangeCipherSpec, early data, or more pipelined data) are left for the caller
/// (<see cref="ClientHelloInfo.Length"/> says where they start).</para>
/// <para>Host names: 1..253 bytes once one trailing dot is removed, labels 1..63 bytes, made of
/// ASCII letters, digits, '-' and '_' only. The underscore is tolerated because real clients send
/// names such as <c>_dmarc.example</c> or <c>my_host.example</c> and it is harmless as a routing
/// key; the position of '-' is not checked. NUL, other punctuation, spaces and any byte above
/// 0x7F (non-ASCII, i.e. not A-label form) are rejected. IP literals are not rejected
/// (they simply match no vhost). The name is lower-cased.</para>
/// </remarks>
public static class ClientHelloParser
{
    /// <summary>Largest ClientHello body accepted (the handshake header's uint24 length).</summary>
    public const int MaxHandshakeLength = 16384;

    /// <summary>Largest TLS plaintext record (2^14).</summary>
    public const int MaxRecordLength = 16384;

    /// <summary>
    /// Most records a ClientHello may be spread over. Two suffice for the largest accepted hello; real clients use one.
    /// The bound keeps a re-parse after every read linear in practice (a hello in 1-byte records would otherwise cost
    /// O(n^2) over the reads).
    /// </summary>
    public const int MaxRecords = 256;

    /// <summary>Size of a TLS record header.</summary>
    public const int RecordHeaderLength = 5;

    private const byte ContentTypeHandshake = 22;
    private const byte HandshakeTypeClientHello = 1;
    private const int HandshakeHeaderLength = 4;
    private const int MaxHostNameLength = 253;

    private const ushort ExtServerName = 0;
    private const ushort ExtSupportedGroups = 10;
    private const ushort ExtSignatureAlgorithms = 13;
    private const ushort ExtAlpn = 16;
    private const ushort ExtSupportedVersions = 43;

    /// <summary>Parses a ClientHello from the start of <paramref name="data"/>.</summary>
    public static ClientHelloResult TryParse(ReadOnlySpan<byte> data, out ClientHelloInfo? info)
        => TryParse(data, out info, out _, out _);

    /// <summary>Parses a ClientHello from the start of <paramref name="data"/>.</summary>
    /// <param name="data">Bytes received so far on the connection.</param>
    /// <param name="info">The parsed ClientHello when the result is <see cref="ClientHelloResult.Ok"/>, otherwise null.</param>
    /// <param name="bytesNeeded">When <see cref="ClientHelloResult.Incomplete"/>: a lower bound on the total
    /// input length (from the start of <paramref name="data"/>) before the parse can progress; the ClientHello
    /// is never shorter than that, so reading up to it never reads past the ClientHello, and calling again
    /// with less is pointless. Otherwise 0.</param>
    /// <param name="error">When <see cref="ClientHelloResult.Malformed"/>: what is wrong, and where. Otherwise null.</param>
    public static ClientHelloResult TryParse(ReadOnlySpan<byte> data, out ClientHelloInfo? info, out int bytesNeeded, out string? error)
    {
        info = null;
        bytesNeeded = 0;
        error = null;

        if (data.IsEmpty)
        {
            bytesNeeded = RecordHeaderLength + HandshakeHeaderLength;
            return ClientHelloResult.Incomplete;
        }

        if (data[0] != ContentTypeHandshake || (data.Length > 1 && data[1] != 3))
            return ClientHelloResult.NotTls;

        // Pass 1: walk the records, collect the handshake header, find where the message ends.
        Span<byte> header = stackalloc byte[HandshakeHeaderLength];
        int pos = 0;          // start of the current record
        int gathered = 0;     // handshake bytes in the complete records before pos
        int target = -1;      // handshake header + body length, once the header is known
        int records = 0;
        ushort recordVersion = 0;
        while (true)
        {
            int left = data.Length - pos;
            if (left < RecordHeaderLength)
            {
                if (left >= 1 && data[pos] != ContentTypeHandshake)
                    return Malformed(out error, $"record {records} at offset {pos} has content type {data[pos]}, expected handshake (22) to continue the ClientHello");
                if (left >= 2 && data[pos + 1] != 3)
                    return Malformed(out error, $"record {records} at offset {pos} has version major {data[pos + 1]}, expected 3");
                int stillNeeded = target < 0 ? HandshakeHeaderLength - gathered : target - gathered;
                bytesNeeded = pos + RecordHeaderLength + Math.Max(1, stillNeeded);
                return ClientHelloResult.Incomplete;
            }

            byte type = data[pos];
            ushort version = BinaryPrimitives.ReadUInt16BigEndian(data.Slice(pos + 1));
            int length = BinaryPrimitives.ReadUInt16BigEndian(data.Slice(pos + 3));
            if (type != ContentTypeHandshake)
                return Malformed(out error, $"record {records} at offset {pos} has content type {type}, expected handshake (22) to continue the ClientHello");
            if (version >> 8 != 3)
                return Malformed(out error, $"record {records} at offset {pos} has version 0x{version:X4}, expected 0x03xx");
            if (length == 0)
                return Malformed(out error, $"record {records} at offset {pos} is an empty handshake fragment");
            if (length > MaxRecordLength)
                return Malformed(out error, $"record {records} at offset {pos} has length {length}, more than {MaxRecordLength}");
            if (records == 0)
                recordVersion = version;
            if (records == MaxRecords)
                return Malformed(out error, $"the ClientHello is spread over more than {MaxRecords} records");

            int fragmentStart = pos + RecordHeaderLength;
            int available = Math.Min(length, data.Length - fragmentStart);

            // Copy handshake header bytes out of this fragment (the header itself may be split over records).
            for (int i = 0; i < available && gathered + i < HandshakeHeaderLength; i++)
            {
                header[gathered + i] = data[fragmentStart + i];
                if (gathered + i == 0 && header[0] != HandshakeTypeClientHello)
                    return Malformed(out error, $"handshake message type {header[0]} is not client_hello (1)");
            }

            if (target < 0 && gathered + available >= HandshakeHeaderLength)
            {
                int bodyLength = (header[1] << 16) | (header[2] << 8) | header[3];
                if (bodyLength > MaxHandshakeLength)
                    return Malformed(out error, $"ClientHello length {bodyLength} exceeds the limit of {MaxHandshakeLength}");
                target = HandshakeHeaderLength + bodyLength;
            }

            if (target >= 0 && gathered + length > target)
            {
                int excess = gathered + length - target;
                return Malformed(out error, $"record {records} at offset {pos} has {excess} byte(s) after the end of the ClientHello (record length {length}, handshake length {target - HandshakeHeaderLength})");
            }

            if (available < length)
            {
                // Record incomplete: at least the rest of it, plus another record if the message needs more.
                int after = gathered + length;
                int more = target >= 0 ? target - after : HandshakeHeaderLength - after;
                bytesNeeded = fragmentStart + length + (more > 0 ? RecordHeaderLength + more : 0);
                return ClientHelloResult.Incomplete;
            }

            records++;
            gathered += length;
            pos = fragmentStart + length;
            if (target >= 0 && gathered == target)
                break;
        }

        // Pass 2: the handshake body, in place when it sits in one record, else reassembled in a pooled buffer.
        int bodyLen = target - HandshakeHeaderLength;
        if (records == 1)
        {
            return ParseBody(data.Slice(RecordHeaderLength + HandshakeHeaderLength, bodyLen), pos, records, recordVersion, out info, out error);
        }

        byte[] rented = ArrayPool<byte>.Shared.Rent(target);
        try
        {
            int copied = 0;
            int p = 0;
            while (copied < target)
            {
                int length = BinaryPrimitives.ReadUInt16BigEndian(data.Slice(p + 3));
                data.Slice(p + RecordHeaderLength, length).CopyTo(rented.AsSpan(copied));
                copied += length;
                p += RecordHeaderLength + length;
            }

            return ParseBody(rented.AsSpan(HandshakeHeaderLength, bodyLen), pos, records, recordVersion, out info, out error);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private static ClientHelloResult ParseBody(
        ReadOnlySpan<byte> b, int totalLength, int records, ushort recordVersion, out ClientHelloInfo? info, out string? error)
    {
        info = null;
        int p = 0;

        if (b.Length < 2 + 32 + 1)
            return Malformed(out error, $"ClientHello body of {b.Length} bytes is too short for version, random and session id");
        ushort legacyVersion = BinaryPrimitives.ReadUInt16BigEndian(b);
        if (legacyVersion >> 8 != 3)
            return Malformed(out error, $"ClientHello legacy_version 0x{legacyVersion:X4} is not 0x03xx");
        p += 2 + 32;

        int sessionIdLength = b[p++];
        if (sessionIdLength > 32)
            return Malformed(out error, $"session id length {sessionIdLength} exceeds 32");
        if (sessionIdLength > b.Length - p)
            return Malformed(out error, $"session id length {sessionIdLength} exceeds remaining {b.Length - p} bytes");
        p += sessionIdLength;

        if (b.Length - p < 2)
            return Malformed(out error, $"cipher suites length needs 2 bytes, {b.Length - p} remain");
        int suitesLength = BinaryPrimitives.ReadUInt16BigEndian(b.Slice(p));
        p += 2;
        if (suitesLength < 2 || (suitesLength & 1) != 0)
            return Malformed(out error, $"cipher suites length {suitesLength} must be even and at least 2");
        if (suitesLength > b.Length - p)
            return Malformed(out error, $"cipher suites length {suitesLength} exceeds remaining {b.Length - p} bytes");
        int suitesStart = p;
        p += suitesLength;

        if (b.Length - p < 1)
            return Malformed(out error, "compression methods length is missing");
        int compressionLength = b[p++];
        if (compressionLength < 1)
            return Malformed(out error, "compression methods list is empty");
        if (compressionLength > b.Length - p)
            return Malformed(out error, $"compression methods length {compressionLength} exceeds remaining {b.Length - p} bytes");
        if (b.Slice(p, compressionLength).IndexOf((byte)0) < 0)
            return Malformed(out error, "compression methods do not include null (0)");
        p += compressionLength;

        // Extensions (optional as a whole).
        int sniStart = -1, sniLength = 0;
        int alpnStart = -1, alpnLength = 0;
        int versionsStart = -1, versionsLength = 0;
        int sigAlgsStart = -1, sigAlgsLength = 0;
        int groupsStart = -1, groupsLength = 0;
        int extensionCount = 0;
        int extensionsStart = p;

        if (p < b.Length)
        {
            if (b.Length - p < 2)
                return Malformed(out error, "1 byte after compression methods: extensions length needs 2");
            int extensionsLength = BinaryPrimitives.ReadUInt16BigEndian(b.Slice(p));
            p += 2;
            if (extensionsLength != b.Length - p)
            {
                return extensionsLength > b.Length - p
                    ? Malformed(out error, $"extensions length {extensionsLength} exceeds remaining {b.Length - p} bytes")
                    : Malformed(out error, $"extensions length {extensionsLength} leaves {b.Length - p - extensionsLength} trailing byte(s) in the ClientHello");
            }

            extensionsStart = p;
            Span<ulong> seen = stackalloc ulong[65536 / 64];
            seen.Clear();
            while (p < b.Length)
            {
                if (b.Length - p < 4)
                    return Malformed(out error, $"extension header at offset {p} needs 4 bytes, {b.Length - p} remain");
                ushort extType = BinaryPrimitives.ReadUInt16BigEndian(b.Slice(p));
                int extLength = BinaryPrimitives.ReadUInt16BigEndian(b.Slice(p + 2));
                p += 4;
                if (extLength > b.Length - p)
                    return Malformed(out error, $"extension {extType} length {extLength} exceeds remaining {b.Length - p} bytes");
                ref ulong word = ref seen[extType >> 6];
                ulong bit = 1UL << (extType & 63);
                if ((word & bit) != 0)
                    return Malformed(out error, $"duplicate extension {extType}");
                word |= bit;
                extensionCount++;

                ReadOnlySpan<byte> ext = b.Slice(p, extLength);
                switch (extType)
                {
                    case ExtServerName:
                        if (!CheckServerNameList(ext, out int nameOffset, out int nameLength, out error))
                            return ClientHelloResult.Malformed;
                        sniStart = p + nameOffset;
                        sniLength = nameLength;
                        break;
                    case ExtAlpn:
                        if (!CheckAlpn(ext, out error))
                            return ClientHelloResult.Malformed;
                        alpnStart = p + 2;
                        alpnLength = extLength - 2;
                        break;
                    case ExtSupportedVersions:
                        if (extLength < 1 || ext[0] != extLength - 1 || ext[0] < 2 || (ext[0] & 1) != 0)
                            return Malformed(out error, $"supported_versions: list length {(extLength < 1 ? -1 : ext[0])} in an extension of {extLength} bytes must be even, at least 2 and fill it");
                        versionsStart = p + 1;
                        versionsLength = extLength - 1;
                        break;
                    case ExtSignatureAlgorithms:
                        if (!CheckUInt16List(ext, "signature_algorithms", out error))
                            return ClientHelloResult.Malformed;
                        sigAlgsStart = p + 2;
                        sigAlgsLength = extLength - 2;
                        break;
                    case ExtSupportedGroups:
                        if (!CheckUInt16List(ext, "supported_groups", out error))
                            return ClientHelloResult.Malformed;
                        groupsStart = p + 2;
                        groupsLength = extLength - 2;
                        break;
                    default:
                        break;
                }

                p += extLength;
            }
        }

        // Everything checked: build the result (the only allocations).
        string? serverName = null;
        if (sniStart >= 0)
        {
            serverName = ToHostName(b.Slice(sniStart, sniLength), out error);
            if (serverName is null)
                return ClientHelloResult.Malformed;
        }

        var extensionTypes = new ushort[extensionCount];
        for (int i = 0, q = extensionsStart; i < extensionCount; i++)
        {
            extensionTypes[i] = BinaryPrimitives.ReadUInt16BigEndian(b.Slice(q));
            q += 4 + BinaryPrimitives.ReadUInt16BigEndian(b.Slice(q + 2));
        }

        info = new ClientHelloInfo(
            totalLength,
            records,
            recordVersion,
            legacyVersion,
            sessionIdLength,
            serverName,
            alpnStart >= 0 ? ToAlpnList(b.Slice(alpnStart, alpnLength)) : [],
            ToUInt16Array(b, versionsStart, versionsLength),
            ToUInt16Array(b, suitesStart, suitesLength),
            ToUInt16Array(b, sigAlgsStart, sigAlgsLength),
            ToUInt16Array(b, groupsStart, groupsLength),
            extensionTypes);
        error = null;
        return ClientHelloResult.Ok;
    }

    private static bool CheckServerNameList(ReadOnlySpan<byte> ext, out int nameOffset, out int nameLength, out string? error)
    {
        nameOffset = -1;
        nameLength = 0;
        if (ext.Length < 2)
            return Fail(out error, $"server_name: extension of {ext.Length} bytes has no list length");
        int listLength = BinaryPrimitives.ReadUInt16BigEndian(ext);
        if (listLength != ext.Length - 2)
            return Fail(out error, $"server_name: list length {listLength} does not match the extension's {ext.Length - 2} bytes");
        if (listLength == 0)
            return Fail(out error, "server_name: empty list");

        int p = 2;
        while (p < ext.Length)
        {
            if (ext.Length - p < 3)
                return Fail(out error, $"server_name: entry at offset {p} needs 3 header bytes, {ext.Length - p} remain");
            byte nameType = ext[p];
            int length = BinaryPrimitives.ReadUInt16BigEndian(ext.Slice(p + 1));
            p += 3;
            if (length > ext.Length - p)
                return Fail(out error, $"server_name: name length {length} exceeds remaining {ext.Length - p} bytes");
            if (nameType == 0)
            {
                if (nameOffset >= 0)
                    return Fail(out error, "server_name: more than one host_name");
                nameOffset = p;
                nameLength = length;
            }

            p += length;
        }

        if (nameOffset < 0)
            return Fail(out error, "server_name: no host_name entry");
        error = null;
        return true;
    }

    private static bool CheckAlpn(ReadOnlySpan<byte> ext, out string? error)
    {
        if (ext.Length < 2)
            return Fail(out error, $"ALPN: extension of {ext.Length} bytes has no list length");
        int listLength = BinaryPrimitives.ReadUInt16BigEndian(ext);
        if (listLength != ext.Length - 2)
            return Fail(out error, $"ALPN: list length {listLength} does not match the extension's {ext.Length - 2} bytes");
        if (listLength == 0)
            return Fail(out error, "ALPN: empty protocol list");
        int p = 2;
        while (p < ext.Length)
        {
            int length = ext[p++];
            if (length == 0)
                return Fail(out error, $"ALPN: empty protocol name at offset {p - 1}");
            if (length > ext.Length - p)
                return Fail(out error, $"ALPN: protocol name length {length} exceeds remaining {ext.Length - p} bytes");
            p += length;
        }

        error = null;
        return true;
    }

    private static bool CheckUInt16List(ReadOnlySpan<byte> ext, string name, out string? error)
    {
        if (ext.Length < 2)
            return Fail(out error, $"{name}: extension of {ext.Length} bytes has no list length");
        int listLength = BinaryPrimitives.ReadUInt16BigEndian(ext);
        if (listLength != ext.Length - 2)
            return Fail(out error, $"{name}: list length {listLength} does not match the extension's {ext.Length - 2} bytes");
        if (listLength < 2 || (listLength & 1) != 0)
            return Fail(out error, $"{name}: list length {listLength} must be even and at least 2");
        error = null;
        return true;
    }

    /// <summary>Validates a host_name (see the class remarks) and returns it lower-cased without its trailing dot; null and an error if invalid.</summary>
    internal static string? ToHostName(ReadOnlySpan<byte> name, out string? error)
    {
        if (name.Length > 0 && name[^1] == (byte)'.')
            name = name[..^1];
        if (name.IsEmpty)
        {
            error = "server_name: empty host name";
            return null;
        }

        if (name.Length > MaxHostNameLength)
        {
            error = $"server_name: host name of {name.Length} bytes exceeds {MaxHostNameLength}";
            return null;
        }

        Span<char> chars = stackalloc char[MaxHostNameLength];
        int labelLength = 0;
        for (int i = 0; i < name.Length; i++)
        {
            byte c = name[i];
            if (c == (byte)'.')
            {
                if (labelLength == 0)
                {
                    error = $"server_name: empty label at offset {i}";
                    return null;
                }

                labelLength = 0;
                chars[i] = '.';
                continue;
            }

            if (c is >= (byte)'A' and <= (byte)'Z')
            {
                c = (byte)(c | 0x20);
            }
            else if (!(c is >= (byte)'a' and <= (byte)'z' or >= (byte)'0' and <= (byte)'9' or (byte)'-' or (byte)'_'))
            {
                error = $"server_name: invalid byte 0x{c:X2} at offset {i}";
                return null;
            }

            if (++labelLength > 63)
            {
                error = $"server_name: label longer than 63 bytes ending at offset {i}";
                return null;
            }

            chars[i] = (char)c;
        }

        if (labelLength == 0)
        {
            error = "server_name: empty last label";
            return null;
        }

        error = null;
        return new string(chars[..name.Length]);
    }

    private static string[] ToAlpnList(ReadOnlySpan<byte> list)
    {
        int count = 0;
        for (int p = 0; p < list.Length; p += 1 + list[p])
            count++;
        var result = new string[count];
        for (int i = 0, p = 0; i < count; i++)
        {
            int length = list[p];
            result[i] = Encoding.Latin1.GetString(list.Slice(p + 1, length));
            p += 1 + length;
        }

        return result;
    }

    private static ushort[] ToUInt16Array(ReadOnlySpan<byte> b, int start, int length)
    {
        if (start < 0 || length == 0)
            return [];
        var result = new ushort[length / 2];
        for (int i = 0; i < result.Length; i++)
            result[i] = BinaryPrimitives.ReadUInt16BigEndian(b.Slice(start + (2 * i)));
        return result;
    }

    private static ClientHelloResult Malformed(out string? error, string message)
    {
        error = message;
        return ClientHelloResult.Malformed;
    }

    private static bool Fail(out string? error, string message)
    {
        error = message;
        return false;
    }

    /// <summary>Formats a TLS version value as text (for logs): "TLSv1.2", or hex for unknown values.</summary>
    public static string VersionName(ushort version) => version switch
    {
        0x0300 => "SSLv3",
        0x0301 => "TLSv1",
        0x0302 => "TLSv1.1",
        0x0303 => "TLSv1.2",
        0x0304 => "TLSv1.3",
        _ => "0x" + version.ToString("X4", CultureInfo.InvariantCulture),
    };
}
