using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// Where a vhost's reverse proxy sends requests: the tenant's own application on a Unix socket or on a loopback TCP
/// port, and nowhere else. The one parser of the upstream text: the config loader (<c>check</c> and <c>run</c>), the
/// master's Landlock connect ports and chroot binds, and the worker all use <see cref="TryParse"/>, so they cannot
/// disagree.
/// </summary>
/// <remarks>
/// <para>Accepted (the scheme in any case):</para>
/// <list type="bullet">
/// <item><c>unix:/absolute/path.sock</c> — a pathname socket: absolute, no <c>.</c> or <c>..</c> segment, no empty
/// segment, not ending in <c>/</c>, no NUL, at most 107 bytes (sun_path).</item>
/// <item><c>http://A.B.C.D:PORT</c> with A.B.C.D in 127.0.0.0/8 (every address of it is the loopback interface on
/// Linux), written as four decimal numbers 0-255 without leading zeros; or <c>http://[::1]:PORT</c>, the one IPv6
/// loopback address, written exactly so. PORT is 1-65535 in decimal without sign or leading zeros. A single trailing
/// <c>/</c> is allowed; nothing else after the port (no path, query, fragment or user info).</item>
/// </list>
/// <para>Refused: host names (<c>localhost</c> included: no name resolution in a jailed worker), any other address,
/// IPv4-mapped or alternative spellings of addresses (<c>127.1</c>, <c>0x7f.0.0.1</c>, <c>[0:0:0:0:0:0:0:1]</c>),
/// https, abstract sockets.</para>
/// <para>Value equality is on what is reached (socket path, or address and port), not on the spelling:
/// <c>HTTP://127.0.0.1:80/</c> equals <c>http://127.0.0.1:80</c>. <see cref="ToString"/> is the canonical spelling.</para>
/// </remarks>
public sealed class ProxyUpstream : IEquatable<ProxyUpstream>
{
    /// <summary>sun_path holds 108 bytes, the terminating NUL included.</summary>
    public const int MaxSocketPathBytes = 107;

    /// <summary>What every refusal ends with: the accepted forms.</summary>
    public const string AcceptedForms = "use unix:/absolute/path.sock, http://127.0.0.1:PORT (any address of 127.0.0.0/8) or http://[::1]:PORT";

    private ProxyUpstream(string? socketPath, IPAddress? address, int port)
    {
        SocketPath = socketPath;
        Address = address;
        Port = port;
    }

    /// <summary>The Unix socket's absolute path; <see langword="null"/> for a TCP upstream.</summary>
    public string? SocketPath { get; }

    /// <summary>The loopback address; <see langword="null"/> for a Unix socket.</summary>
    public IPAddress? Address { get; }

    /// <summary>The TCP port (1-65535); 0 for a Unix socket.</summary>
    public int Port { get; }

    public bool IsUnixSocket => SocketPath is not null;

    /// <summary>A new endpoint to connect to (not cached: endpoints are mutable objects).</summary>
    public EndPoint CreateEndPoint() =>
        SocketPath is not null ? new UnixDomainSocketEndPoint(SocketPath) : new IPEndPoint(Address!, Port);

    /// <summary>Parses an upstream; on failure <paramref name="error"/> says what is wrong and which forms are accepted.</summary>
    public static bool TryParse(string? text, out ProxyUpstream upstream, out string error)
    {
        upstream = null!;
        error = Refusal(text);
        if (error.Length != 0)
        {
            error = $"{error}; {AcceptedForms}";
            return false;
        }

        upstream = Parse(text!);
        return true;
    }

    public bool Equals(ProxyUpstream? other) =>
        other is not null
        && string.Equals(SocketPath, other.SocketPath, StringComparison.Ordinal)
        && Equals(Address, other.Address)
        && Port == other.Port;

    public override bool Equals(object? obj) => Equals(obj as ProxyUpstream);

    public override int GetHashCode() => HashCode.Combine(SocketPath, Address, Port);

    public static bool operator ==(ProxyUpstream? left, ProxyUpstream? right) => left is null ? right is null : left.Equals(right);

    public static bool operator !=(ProxyUpstream? left, ProxyUpstream? right) => !(left == right);

    /// <summary>The canonical spelling: <c>unix:/path</c>, <c>http://127.0.0.1:PORT</c> or <c>http://[::1]:PORT</c>.</summary>
    public override string ToString() =>
        SocketPath is not null ? "unix:" + SocketPath : $"http://{(Address!.AddressFamily == AddressFamily.InterNetworkV6 ? "[::1]" : Address)}:{Port.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>Why <paramref name="text"/> is refused, or the empty string.</summary>
    private static string Refusal(string? text)
    {
        if (string.IsNullOrEmpty(text))
            return "the upstream is empty";
        if (text.StartsWith("unix:", StringComparison.OrdinalIgnoreCase))
            return SocketPathRefusal(text["unix:".Length..]);
        if (!text.StartsWith("http://", StringComparison.OrdinalIgnoreCase))
            return text.StartsWith("https://", StringComparison.OrdinalIgnoreCase)
                ? $"'{text}': https is not supported (the application is on this machine: plain HTTP over loopback or a Unix socket)"
                : $"'{text}' is neither unix: nor http://";
        var authority = text.AsSpan("http://".Length);
        if (authority.EndsWith("/"))
            authority = authority[..^1];
        var colon = authority.LastIndexOf(':');
        if (colon < 0 || authority.EndsWith("]"))
            return $"'{text}' has no port (an explicit port is required)";
        var host = authority[..colon];
        var port = authority[(colon + 1)..];
        if (host.IndexOfAny('/', '?', '#') >= 0 || host.Contains('@') || port.IndexOfAny('/', '?', '#') >= 0)
            return $"'{text}' has something after the port or user info (only http://ADDRESS:PORT, optionally with one trailing /)";
        if (!IsLoopbackIPv4(host) && !host.SequenceEqual("[::1]"))
            return $"'{text}': '{host}' is not a loopback address written as 127.x.y.z or [::1] (no host names, no other addresses)";
        if (!IsPort(port))
            return $"'{text}': '{port}' is not a port number (1-65535, decimal, no sign or leading zero)";
        return string.Empty;
    }

    private static string SocketPathRefusal(string path)
    {
        if (path.Length == 0 || path[0] != '/')
            return $"'unix:{path}': a Unix socket must be an absolute path (abstract sockets are not supported)";
        if (path.Contains('\0', StringComparison.Ordinal))
            return "a Unix socket path cannot contain NUL";
        if (path.EndsWith('/'))
            return $"'unix:{path}' names a directory, not a socket file";
        if (path.Split('/').Skip(1).Any(segment => segment is "" or "." or ".."))
            return $"'unix:{path}' has an empty, '.' or '..' segment";
        if (Encoding.UTF8.GetByteCount(path) > MaxSocketPathBytes)
            return $"'unix:{path}': a Unix socket path is at most {MaxSocketPathBytes} bytes";
        return string.Empty;
    }

    private static ProxyUpstream Parse(string text)
    {
        if (text.StartsWith("unix:", StringComparison.OrdinalIgnoreCase))
            return new ProxyUpstream(text["unix:".Length..], null, 0);
        var authority = text.AsSpan("http://".Length).TrimEnd('/');
        var colon = authority.LastIndexOf(':');
        var host = authority[..colon];
        var address = host[0] == '[' ? IPAddress.IPv6Loopback : IPAddress.Parse(host);
        return new ProxyUpstream(null, address, int.Parse(authority[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture));
    }

    /// <summary>Four decimal octets 0-255 without leading zeros, the first 127.</summary>
    private static bool IsLoopbackIPv4(ReadOnlySpan<char> host)
    {
        var count = 0;
        foreach (var range in host.Split('.'))
        {
            var part = host[range];
            if (++count > 4 || !IsDecimal(part, 255, allowZero: true))
                return false;
            if (count == 1 && !part.SequenceEqual("127"))
                return false;
        }

        return count == 4;
    }

    private static bool IsPort(ReadOnlySpan<char> port) => IsDecimal(port, 65535, allowZero: false);

    private static bool IsDecimal(ReadOnlySpan<char> s, int max, bool allowZero)
    {
        if (s.IsEmpty || s.Length > 5 || (s.Length > 1 && s[0] == '0'))
            return false;
        foreach (var c in s)
        {
            if (!char.IsAsciiDigit(c))
                return false;
        }

        var value = int.Parse(s, NumberStyles.None, CultureInfo.InvariantCulture);
        return value <= max && (allowZero || value > 0);
    }
}
