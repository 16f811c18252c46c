namespace Dispatch.TlsDispatcher.Http;

internal enum HeadStatus
{
    /// <summary>More bytes are needed.</summary>
    Incomplete,

    /// <summary>A whole, well-formed head with a routable host.</summary>
    Complete,

    /// <summary>Rejected: see the status code and reason.</summary>
    Invalid,
}

/// <summary>
/// Reads just enough of an HTTP/1.x request head to route it: the request line and the Host (or the
/// authority of an absolute-form target). The worker's HTTP server parses the request again in full;
/// this parser is strict so that the two cannot disagree on which site a request is for:
/// <code>
/// request-line = method SP request-target SP HTTP-version CRLF     (single spaces, HTTP/1.0 or 1.1)
/// field-line   = field-name ":" OWS field-value OWS CRLF             (no obs-fold, no CTLs but HTAB)
/// head         = request-line *( field-line ) CRLF                    (bare LF and NUL rejected)
/// </code>
/// Exactly one Host; required (we cannot route without it, even for HTTP/1.0). Allocation-free:
/// the host is written, lowercased and without port or trailing dot, into a caller's buffer.
/// </summary>
internal static class RequestHead
{
    public const int MaxMethod = 32;

    /// <param name="data">All bytes read so far.</param>
    /// <param name="scanned">How far a previous call already scanned; start at 0.</param>
    /// <param name="host">Receives the host; at least 256 chars.</param>
    public static HeadStatus Parse(
        ReadOnlySpan<byte> data,
        ref int scanned,
        Span<char> host,
        out int hostLength,
        out int headLength,
        out int errorStatus,
        out string? error)
        => Parse(data, ref scanned, host, out hostLength, out headLength, out _, out errorStatus, out error);

    /// <param name="target">Where the request target is in <paramref name="data"/> (for redirects).</param>
    public static HeadStatus Parse(
        ReadOnlySpan<byte> data,
        ref int scanned,
        Span<char> host,
        out int hostLength,
        out int headLength,
        out Range target,
        out int errorStatus,
        out string? error)
    {
        hostLength = 0;
        headLength = 0;
        target = default;
        errorStatus = 400;
        error = null;

        // The request line must open with a method token, so garbage is refused at once.
        var methodEnd = data.IndexOf((byte)' ');
        var methodSpan = methodEnd < 0 ? data : data[..methodEnd];
        for (var i = 0; i < methodSpan.Length && i <= MaxMethod; i++)
        {
            if (!IsTChar(methodSpan[i]))
                return Fail(out error, "the request line does not start with a method");
        }

        if (methodEnd < 0 && data.Length > MaxMethod || methodEnd == 0 || methodEnd > MaxMethod)
            return Fail(out error, "the request line does not start with a method");

        // Find the end of the head in the new bytes; every LF must follow a CR.
        var end = -1;
        for (var i = Math.Max(scanned, 0); i < data.Length; i++)
        {
            var b = data[i];
            if (b == 0)
                return Fail(out error, "NUL byte in the request head");
            if (b != (byte)'\n')
                continue;
            if (i == 0 || data[i - 1] != (byte)'\r')
                return Fail(out error, "bare LF in the request head (lines must end with CRLF)");
            if (i >= 3 && data[i - 2] == (byte)'\n' && data[i - 3] == (byte)'\r')
            {
                end = i + 1;
                break;
            }
        }

        if (end < 0)
        {
            scanned = data.Length;
            return HeadStatus.Incomplete;
        }

        headLength = end;
        var head = data[..end];
        var lineEnd = head.IndexOf("\r\n"u8);
        var line = head[..lineEnd];
        var sp1 = line.IndexOf((byte)' ');
        var rest = line[(sp1 + 1)..];
        var sp2 = rest.IndexOf((byte)' ');
        if (sp2 <= 0)
            return Fail(out error, "the request line is not 'METHOD target HTTP/1.x'");
        var requestTarget = rest[..sp2];
        var version = rest[(sp2 + 1)..];
        if (requestTarget.IndexOf((byte)' ') >= 0 || version.IndexOf((byte)' ') >= 0)
            return Fail(out error, "the request line is not 'METHOD target HTTP/1.x'");
        target = new Range(sp1 + 1, sp1 + 1 + sp2);
        foreach (var b in requestTarget)
        {
            if (b <= 0x20 || b == 0x7f)
                return Fail(out error, "control character in the request target");
        }

        bool http11;
        if (version.SequenceEqual("HTTP/1.1"u8))
        {
            http11 = true;
        }
        else if (version.SequenceEqual("HTTP/1.0"u8))
        {
            http11 = false;
        }
        else
        {
            errorStatus = version.StartsWith("HTTP/"u8) ? 505 : 400;
            error = errorStatus == 505 ? "only HTTP/1.0 and HTTP/1.1 are spoken here" : "the request line has no HTTP version";
            return HeadStatus.Invalid;
        }

        ReadOnlySpan<byte> authority = default;
        var absolute = false;
        if (requestTarget.Length > 0 && requestTarget[0] != (byte)'/' && requestTarget[0] != (byte)'*')
        {
            var schemeEnd = requestTarget.IndexOf("://"u8);
            if (schemeEnd <= 0)
                return Fail(out error, "the request target is neither a path nor an absolute URI");
            var afterScheme = requestTarget[(schemeEnd + 3)..];
            var authEnd = afterScheme.IndexOfAny("/?#"u8);
            authority = authEnd < 0 ? afterScheme : afterScheme[..authEnd];
            if (authority.IndexOf((byte)'@') >= 0)
                return Fail(out error, "user information in the request target");
            absolute = true;
        }

        // Header fields.
        ReadOnlySpan<byte> hostField = default;
        var hostCount = 0;
        var fields = head[(lineEnd + 2)..^2];
        while (fields.Length > 0)
        {
            var eol = fields.IndexOf("\r\n"u8);
            var field = fields[..eol];
            fields = fields[(eol + 2)..];
            if (field.Length == 0)
                return Fail(out error, "empty header line");
            if (field[0] is (byte)' ' or (byte)'\t')
                return Fail(out error, "obsolete line folding in the request head");
            var colon = field.IndexOf((byte)':');
            if (colon <= 0)
                return Fail(out error, "a header line without a name and a colon");
            var name = field[..colon];
            foreach (var b in name)
            {
                if (!IsTChar(b))
                    return Fail(out error, "invalid character in a header name (whitespace before the colon?)");
            }

            var value = field[(colon + 1)..];
            foreach (var b in value)
            {
                if ((b < 0x20 && b != (byte)'\t') || b == 0x7f)
                    return Fail(out error, "control character in a header value");
            }

            if (name.Length == 4 && System.Text.Ascii.EqualsIgnoreCase(name, "host"u8))
            {
                hostCount++;
                hostField = value.Trim(" \t"u8);
            }
        }

        if (hostCount > 1)
            return Fail(out error, "more than one Host header");
        if (hostCount == 0 && http11)
            return Fail(out error, "missing Host header");
        if (!absolute)
            authority = hostField;
        if (authority.Length == 0)
            return Fail(out error, hostCount == 0 ? "no Host header: this server needs one to choose the site" : "empty Host");
        return ParseHost(authority, host, out hostLength, out error) ? HeadStatus.Complete : HeadStatus.Invalid;
    }

    /// <summary>host [":" port], IPv6 literals in brackets; lowercased, trailing dot dropped.</summary>
    public static bool ParseHost(ReadOnlySpan<byte> authority, Span<char> host, out int hostLength, out string? error)
    {
        hostLength = 0;
        error = null;
        ReadOnlySpan<byte> name;
        ReadOnlySpan<byte> port = default;
        if (authority[0] == (byte)'[')
        {
            var close = authority.IndexOf((byte)']');
            if (close < 0)
            {
                error = "unterminated IPv6 literal in Host";
                return false;
            }

            name = authority[..(close + 1)];
            var after = authority[(close + 1)..];
            if (after.Length > 0)
            {
                if (after[0] != (byte)':')
                {
                    error = "junk after the IPv6 literal in Host";
                    return false;
                }

                port = after[1..];
            }

            foreach (var b in name[1..^1])
            {
                if (!(IsHex(b) || b is (byte)':' or (byte)'.'))
                {
                    error = "invalid IPv6 literal in Host";
                    return false;
                }
            }
        }
        else
        {
            var colon = authority.IndexOf((byte)':');
            name = colon < 0 ? authority : authority[..colon];
            if (colon >= 0)
                port = authority[(colon + 1)..];
            if (name.Length > 0 && name[^1] == (byte)'.')
                name = name[..^1];
            foreach (var b in name)
            {
                if (!(b is >= (byte)'a' and <= (byte)'z' or >= (byte)'A' and <= (byte)'Z' or >= (byte)'0' and <= (byte)'9' or (byte)'-' or (byte)'.' or (byte)'_'))
                {
                    error = "invalid character in Host";
                    return false;
                }
            }
        }

        if (name.Length is 0 or > 253 || name.Length > host.Length)
        {
            error = "Host name is empty or too long";
            return false;
        }

        if (port.Length > 5 || (authority.IndexOf((byte)':') >= 0 && authority[0] != (byte)'[' && port.Length == 0))
        {
            error = "invalid port in Host";
            return false;
        }

        foreach (var b in port)
        {
            if (b is < (byte)'0' or > (byte)'9')
            {
                error = "invalid port in Host";
                return false;
            }
        }

        for (var i = 0; i < name.Length; i++)
            host[i] = (char)(name[i] is >= (byte)'A' and <= (byte)'Z' ? name[i] + 32 : name[i]);
        hostLength = name.Length;
        return true;
    }

    private static HeadStatus Fail(out string? error, string reason)
    {
        error = reason;
        return HeadStatus.Invalid;
    }

    private static bool IsHex(byte b) => b is >= (byte)'0' and <= (byte)'9' or >= (byte)'a' and <= (byte)'f' or >= (byte)'A' and <= (byte)'F';

    // RFC 9110 tchar: "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
    private static bool IsTChar(byte b) =>
        b is >= (byte)'a' and <= (byte)'z' or >= (byte)'A' and <= (byte)'Z' or >= (byte)'0' and <= (byte)'9'
            or (byte)'!' or (byte)'#' or (byte)'$' or (byte)'%' or (byte)'&' or (byte)'\'' or (byte)'*' or (byte)'+'
            or (byte)'-' or (byte)'.' or (byte)'^' or (byte)'_' or (byte)'`' or (byte)'|' or (byte)'~';
}
