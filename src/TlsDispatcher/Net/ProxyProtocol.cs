using System.Buffers.Binary;
using System.Net;
using System.Text;

namespace Dispatch.TlsDispatcher.Net;

internal enum ProxyHeaderStatus
{
    Incomplete,
    Ok,
    Invalid,
}

/// <summary>
/// The PROXY protocol header a load balancer puts before the client's bytes (HAProxy's
/// proxy-protocol.txt), versions 1 and 2:
/// <code>
/// v1: "PROXY" SP ("TCP4" | "TCP6" | "UNKNOWN") [SP src SP dst SP sport SP dport] CRLF   (≤ 107 bytes)
/// v2: 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A | ver/cmd (0x21 PROXY, 0x20 LOCAL) | family (0x11 TCP4,
///     0x21 TCP6, other) | u16 length | addresses (TCP4: 4+4+2+2, TCP6: 16+16+2+2) | TLVs (skipped)
/// </code>
/// Accepted only from trusted sources; the source address it carries replaces the socket's peer.
/// </summary>
internal static class ProxyProtocol
{
    public const int MaxV1 = 107;
    public const int MaxV2 = 16 + 512;
    private static ReadOnlySpan<byte> V2Signature => [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

    /// <summary>Whether <paramref name="data"/> could begin a PROXY header (used to refuse one from an untrusted source).</summary>
    public static bool LooksLikeHeader(ReadOnlySpan<byte> data) =>
        data.StartsWith("PROXY "u8) || (data.Length >= 12 && data[..12].SequenceEqual(V2Signature));

    /// <param name="source">The client the header announces; null for LOCAL / UNKNOWN (keep the socket's peer).</param>
    /// <param name="consumed">The header's length: the client's own bytes start there.</param>
    public static ProxyHeaderStatus Parse(ReadOnlySpan<byte> data, out IPEndPoint? source, out int consumed, out string? error)
    {
        source = null;
        consumed = 0;
        error = null;
        if (data.Length == 0)
            return ProxyHeaderStatus.Incomplete;
        if (data[0] == 0x0D)
            return ParseV2(data, out source, out consumed, out error);
        if (data[0] != (byte)'P')
            return Fail(out error, "no PROXY protocol header from a trusted source");
        var probe = data[..Math.Min(data.Length, 6)];
        if (!"PROXY "u8.StartsWith(probe))
            return Fail(out error, "no PROXY protocol header from a trusted source");
        // The line, CRLF included, is at most 107 bytes: look for its end there only (the rest is the client's).
        var end = data[..Math.Min(data.Length, MaxV1)].IndexOf("\r\n"u8);
        if (end < 0)
            return data.Length >= MaxV1 ? Fail(out error, "PROXY v1 header longer than 107 bytes") : ProxyHeaderStatus.Incomplete;
        consumed = end + 2;
        var line = Encoding.ASCII.GetString(data[..end]);
        var parts = line.Split(' ');
        if (parts.Length >= 2 && parts[1] == "UNKNOWN")
            return ProxyHeaderStatus.Ok;
        if (parts.Length != 6 || parts[1] is not ("TCP4" or "TCP6"))
            return Fail(out error, "malformed PROXY v1 header");
        if (!IPAddress.TryParse(parts[2], out var src) || !IPAddress.TryParse(parts[3], out _)
            || (src.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork) != (parts[1] == "TCP4")
            || !ushort.TryParse(parts[4], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var sport)
            || !ushort.TryParse(parts[5], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out _))
            return Fail(out error, "malformed addresses in PROXY v1 header");
        source = new IPEndPoint(src, sport);
        return ProxyHeaderStatus.Ok;
    }

    private static ProxyHeaderStatus ParseV2(ReadOnlySpan<byte> data, out IPEndPoint? source, out int consumed, out string? error)
    {
        source = null;
        consumed = 0;
        error = null;
        var prefix = data[..Math.Min(data.Length, 12)];
        if (!V2Signature.StartsWith(prefix))
            return Fail(out error, "no PROXY protocol header from a trusted source");
        if (data.Length < 16)
            return ProxyHeaderStatus.Incomplete;
        var verCmd = data[12];
        var family = data[13];
        int length = BinaryPrimitives.ReadUInt16BigEndian(data[14..]);
        if (verCmd >> 4 != 2)
            return Fail(out error, $"PROXY v2 header with version {verCmd >> 4}");
        if (16 + length > MaxV2)
            return Fail(out error, $"PROXY v2 header of {16 + length} bytes exceeds {MaxV2}");
        if (data.Length < 16 + length)
            return ProxyHeaderStatus.Incomplete;
        consumed = 16 + length;
        var body = data.Slice(16, length);
        switch (verCmd & 0x0F)
        {
            case 0: // LOCAL: health checks from the balancer itself.
                return ProxyHeaderStatus.Ok;
            case 1:
                break;
            default:
                return Fail(out error, $"PROXY v2 command {verCmd & 0x0F} unknown");
        }

        switch (family)
        {
            case 0x11 when body.Length >= 12:
                source = new IPEndPoint(new IPAddress(body[..4]), BinaryPrimitives.ReadUInt16BigEndian(body[8..]));
                return ProxyHeaderStatus.Ok;
            case 0x21 when body.Length >= 36:
                source = new IPEndPoint(new IPAddress(body[..16]), BinaryPrimitives.ReadUInt16BigEndian(body[32..]));
                return ProxyHeaderStatus.Ok;
            case 0x11 or 0x21:
                return Fail(out error, "PROXY v2 address block too short");
            default:
                return ProxyHeaderStatus.Ok; // UNSPEC, Unix or UDP: keep the socket's peer.
        }
    }

    private static ProxyHeaderStatus Fail(out string? error, string reason)
    {
        error = reason;
        return ProxyHeaderStatus.Invalid;
    }
}

/// <summary>Source addresses allowed to send a PROXY header: addresses or CIDR blocks.</summary>
internal sealed class TrustedProxies
{
    private readonly List<(IPAddress Network, int Bits)> _networks = [];

    public TrustedProxies(IEnumerable<string> entries)
    {
        foreach (var e in entries)
        {
            var slash = e.IndexOf('/', StringComparison.Ordinal);
            var address = IPAddress.Parse(slash < 0 ? e : e[..slash]);
            var bits = slash < 0 ? address.GetAddressBytes().Length * 8 : int.Parse(e[(slash + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            _networks.Add((address, bits));
        }
    }

    public bool IsEmpty => _networks.Count == 0;

    public bool Contains(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6)
            address = address.MapToIPv4();
        var bytes = address.GetAddressBytes();
        foreach (var (network, bits) in _networks)
        {
            var net = network.GetAddressBytes();
            if (net.Length != bytes.Length)
                continue;
            var full = bits / 8;
            if (!bytes.AsSpan(0, full).SequenceEqual(net.AsSpan(0, full)))
                continue;
            var rest = bits % 8;
            if (rest == 0 || ((bytes[full] ^ net[full]) & (0xFF << (8 - rest)) & 0xFF) == 0)
                return true;
        }

        return false;
    }
}
