using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Dispatch.Worker.Http;

/// <summary>
/// A CGI script's response header block (RFC 3875 6.2–6.3), parsed strictly: CRLF or LF line ends, <c>Name: value</c>
/// lines with a token name and printable-ASCII value (tabs allowed; no obs-fold, no bare CR, no other control
/// characters and no non-ASCII bytes, which Kestrel could not send anyway), at most one Status, Content-Type, Location
/// and Content-Length. Anything else makes the script's answer invalid, and the client gets 502.
/// </summary>
internal sealed class CgiResponseHead
{
    /// <summary>Header fields a script may not set: they belong to the connection or the framing, which are ours.</summary>
    private static readonly HashSet<string> DroppedNames = new(StringComparer.OrdinalIgnoreCase)
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "TE", "Trailer", "HTTP2-Settings",
    };

    /// <summary>
    /// Applies this header block to <paramref name="context"/>'s response (status and reason, Content-Type, Location,
    /// Content-Length, the other fields: the first of a name replaces a default of ours, later ones are appended);
    /// false when no body may be sent (HEAD, 204, 304). Shared by CGI and FastCGI, whose answers are both CGI responses.
    /// </summary>
    public bool ApplyTo(HttpContext context)
    {
        var response = context.Response;
        response.StatusCode = Status;
        if (Reason is not null && context.Features.Get<IHttpResponseFeature>() is { } feature)
        {
            feature.ReasonPhrase = Reason;
        }

        if (ContentType is not null)
        {
            response.ContentType = ContentType;
        }

        if (Location is not null)
        {
            response.Headers.Location = Location;
        }

        if (ContentLength is { } length && Status != StatusCodes.Status204NoContent)
        {
            response.ContentLength = length;
        }

        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (name, value) in Fields)
        {
            if (seen.Add(name))
            {
                response.Headers[name] = value; // replaces a default of ours (X-Content-Type-Options)
            }
            else
            {
                response.Headers.Append(name, value);
            }
        }

        return Status is not (StatusCodes.Status204NoContent or StatusCodes.Status304NotModified)
            && !HttpMethods.IsHead(context.Request.Method);
    }

    private CgiResponseHead()
    {
    }

    /// <summary>Status given by the script, else 302 with a Location, else 200.</summary>
    public int Status { get; private set; } = 200;

    /// <summary>The reason phrase of a Status field, if it had one.</summary>
    public string? Reason { get; private set; }

    public string? ContentType { get; private set; }

    public string? Location { get; private set; }

    public long? ContentLength { get; private set; }

    /// <summary>Every other field, in order (repeated names kept: Set-Cookie).</summary>
    public List<KeyValuePair<string, string>> Fields { get; } = [];

    /// <summary>
    /// Looks for the blank line ending the header block in <paramref name="data"/>; <paramref name="scanFrom"/> is where
    /// the previous, unsuccessful scan stopped (so a script writing one byte at a time does not cost quadratic time).
    /// Returns the index where the body starts, or -1; <paramref name="headLength"/> is the header block's length
    /// without the blank line.
    /// </summary>
    public static int FindBodyStart(ReadOnlySpan<byte> data, int scanFrom, out int headLength)
    {
        headLength = 0;

        // A blank first line: an empty header block (invalid, but the parser says why).
        if (data.StartsWith("\n"u8))
        {
            return 1;
        }

        if (data.StartsWith("\r\n"u8))
        {
            return 2;
        }

        for (var i = Math.Max(0, scanFrom - 2); i < data.Length; i++)
        {
            if (data[i] != '\n')
            {
                continue;
            }

            if (i + 1 < data.Length && data[i + 1] == '\n')
            {
                headLength = i + 1;
                return i + 2;
            }

            if (i + 2 < data.Length && data[i + 1] == '\r' && data[i + 2] == '\n')
            {
                headLength = i + 1;
                return i + 3;
            }
        }

        return -1;
    }

    /// <summary>Parses the header block (without its blank line). On failure <paramref name="error"/> says why.</summary>
    public static bool TryParse(ReadOnlySpan<byte> head, out CgiResponseHead result, out string error)
    {
        result = new CgiResponseHead();
        error = string.Empty;
        if (head.IsEmpty)
        {
            error = "empty header block";
            return false;
        }

        int? status = null;
        foreach (var range in head.Split((byte)'\n'))
        {
            var line = head[range];
            if (line.EndsWith("\r"u8))
            {
                line = line[..^1];
            }

            if (line.IsEmpty)
            {
                continue; // only the final line end of the block
            }

            if (!TryParseField(line, out var name, out var value, out error))
            {
                return false;
            }

            if (name.Equals("Status", StringComparison.OrdinalIgnoreCase))
            {
                if (status is not null)
                {
                    error = "more than one Status field";
                    return false;
                }

                if (!TryParseStatus(value, out var code, out var reason))
                {
                    error = $"invalid Status '{value}'";
                    return false;
                }

                status = code;
                result.Reason = reason;
            }
            else if (name.Equals("Content-Type", StringComparison.OrdinalIgnoreCase))
            {
                if (result.ContentType is not null)
                {
                    error = "more than one Content-Type field";
                    return false;
                }

                result.ContentType = value;
            }
            else if (name.Equals("Location", StringComparison.OrdinalIgnoreCase))
            {
                if (result.Location is not null || value.Length == 0)
                {
                    error = "more than one or an empty Location field";
                    return false;
                }

                result.Location = value;
            }
            else if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
            {
                if (result.ContentLength is not null
                    || value.Length is 0 or > 18
                    || value.AsSpan().IndexOfAnyExceptInRange('0', '9') >= 0
                    || !long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var length))
                {
                    error = $"invalid or repeated Content-Length '{value}'";
                    return false;
                }

                result.ContentLength = length;
            }
            else if (!DroppedNames.Contains(name))
            {
                result.Fields.Add(new(name, value));
            }
        }

        result.Status = status ?? (result.Location is not null ? 302 : 200);
        return true;
    }

    private static bool TryParseField(ReadOnlySpan<byte> line, out string name, out string value, out string error)
    {
        name = value = error = string.Empty;
        var colon = line.IndexOf((byte)':');
        if (colon <= 0)
        {
            error = line[0] is (byte)' ' or (byte)'\t' ? "folded header line (obs-fold)" : "header line without a field name and ':'";
            return false;
        }

        foreach (var b in line[..colon])
        {
            if (!IsTokenChar(b))
            {
                error = "invalid character in a header field name";
                return false;
            }
        }

        var raw = line[(colon + 1)..].Trim(" \t"u8);
        foreach (var b in raw)
        {
            if (b is (< 0x20 and not (byte)'\t') or >= 0x7f)
            {
                error = $"control or non-ASCII character in the value of '{Encoding.ASCII.GetString(line[..colon])}'";
                return false;
            }
        }

        name = Encoding.ASCII.GetString(line[..colon]);
        value = Encoding.ASCII.GetString(raw);
        return true;
    }

    private static bool TryParseStatus(string value, out int code, out string? reason)
    {
        code = 0;
        reason = null;
        if (value.Length < 3 || value.AsSpan(0, 3).IndexOfAnyExceptInRange('0', '9') >= 0 || (value.Length > 3 && value[3] != ' '))
        {
            return false;
        }

        code = int.Parse(value.AsSpan(0, 3), NumberStyles.None, CultureInfo.InvariantCulture);
        if (code is < 200 or > 599)
        {
            return false;
        }

        var text = value.Length > 4 ? value[4..].Trim() : string.Empty;
        reason = text.Length > 0 ? text : null;
        return true;
    }

    /// <summary>tchar of RFC 9110 5.6.2.</summary>
    internal static bool IsTokenChar(byte b) =>
        b is (>= (byte)'a' and <= (byte)'z') or (>= (byte)'A' and <= (byte)'Z') or (>= (byte)'0' and <= (byte)'9')
            or (byte)'!' or (byte)'#' or (byte)'$' or (byte)'%' or (byte)'&' or (byte)'\'' or (byte)'*' or (byte)'+'
            or (byte)'-' or (byte)'.' or (byte)'^' or (byte)'_' or (byte)'`' or (byte)'|' or (byte)'~';
}
