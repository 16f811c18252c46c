using System.Globalization;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// The checks of a vhost's HTTP features (<see cref="VhostWeb"/>), shared by the master's config loader (<c>check</c> and
/// <c>run</c>) and the worker: each returns null when the value is good, otherwise the reason, worded for an operator.
/// </summary>
public static class VhostWebRules
{
    /// <summary>32 MiB: above Kestrel's former fixed 30,000,000 bytes, so nothing that worked stops working.</summary>
    public const long DefaultMaxBodySize = 32L << 20;

    /// <summary>The largest <c>maxBodySize</c> accepted (64 GiB).</summary>
    public const long MaxMaxBodySize = 64L << 30;

    /// <summary>Shorter bodies (of known length) are not worth a compressed encoding.</summary>
    public const int DefaultCompressMinSize = 256;

    public const int MaxCompressMinSize = 1 << 20;

    public const int MaxHeaderValueLength = 4096;

    /// <summary>Compressed by default: text and the structured text types the web serves.</summary>
    public static IReadOnlyList<string> DefaultCompressTypes { get; } =
    [
        "text/*", "application/json", "application/ld+json", "application/manifest+json", "application/problem+json",
        "application/geo+json", "application/javascript", "application/x-javascript", "application/ecmascript",
        "application/xml", "application/xhtml+xml", "application/rss+xml", "application/atom+xml", "image/svg+xml",
        "application/wasm", "application/x-font-ttf", "font/ttf", "font/otf", "application/vnd.ms-fontobject",
        "image/x-icon", "image/vnd.microsoft.icon", "application/graphql-response+json", "application/yaml",
    ];

    /// <summary>
    /// Never compressed, whatever a wildcard says: already-compressed formats (the bytes would not shrink), and event
    /// streams (a compressor holds back each event until it has a block).
    /// </summary>
    public static IReadOnlyList<string> NeverCompressTypes { get; } =
    [
        "text/event-stream", "image/*", "video/*", "audio/*", "font/woff", "font/woff2", "application/font-woff",
        "application/zip", "application/gzip", "application/x-gzip", "application/x-bzip2", "application/x-xz",
        "application/zstd", "application/x-7z-compressed", "application/x-rar-compressed", "application/vnd.rar",
        "application/pdf", "application/octet-stream", "application/x-compress", "application/x-zip-compressed",
    ];

    /// <summary>Image types that are text or uncompressed bitmaps, exempt from <c>image/*</c> in <see cref="NeverCompressTypes"/>.</summary>
    private static readonly string[] CompressibleImages = ["image/svg+xml", "image/x-icon", "image/vnd.microsoft.icon", "image/bmp"];

    /// <summary>Hop-by-hop headers (RFC 9110 7.6.1): they describe one connection, never a resource.</summary>
    private static readonly string[] HopByHop = ["Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "TE", "Trailer", "Upgrade"];

    /// <summary>Set per response by the server or the handler (framing, representation, validators, redirects).</summary>
    private static readonly string[] PerResponse =
        ["Content-Length", "Content-Encoding", "Content-Range", "Content-Type", "Accept-Ranges", "ETag", "Last-Modified", "Vary", "Date", "Location", "Host", "Status"];

    public static readonly int[] RedirectStatuses = [301, 302, 303, 307, 308];

    /// <summary>The statuses an error page may be given for: the client and server errors.</summary>
    public const int MinErrorStatus = 400;

    public const int MaxErrorStatus = 599;

    public static readonly string[] CompressionLevels = ["fastest", "optimal", "smallest"];

    public static bool IsErrorStatus(int status) => status is >= MinErrorStatus and <= MaxErrorStatus;

    /// <summary>A size: bytes, or a number with k, m or g (binary: 50m = 50 MiB), from 1 byte to 64g.</summary>
    public static string? ParseSize(string? text, out long bytes)
    {
        bytes = 0;
        var t = (text ?? string.Empty).Trim();
        var shift = t.Length > 0 ? char.ToLowerInvariant(t[^1]) switch { 'k' => 10, 'm' => 20, 'g' => 30, _ => 0 } : 0;
        var digits = shift == 0 ? t : t[..^1];
        if (digits.Length == 0 || digits.Length > 12 || !long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var n)
            || n == 0 || n > MaxMaxBodySize >> shift)
        {
            return $"'{text}' is not a size from 1 byte to 64g such as 1048576, 512k, 50m or 1g";
        }

        bytes = n << shift;
        return null;
    }

    /// <summary>A response header to set on every response: a valid name, not hop-by-hop nor per-response, a clean value.</summary>
    public static string? CheckHeader(string name, string? value)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name.Length == 0 || !name.All(IsTokenChar))
            return $"'{name}' is not a header name (letters, digits and !#$%&'*+-.^_`|~)";
        if (HopByHop.Contains(name, StringComparer.OrdinalIgnoreCase))
            return $"{name} is a hop-by-hop header: it belongs to one connection, not to the vhost's responses";
        if (PerResponse.Contains(name, StringComparer.OrdinalIgnoreCase))
            return $"{name} is set for each response by the server or the handler and cannot be fixed per vhost";
        if (string.IsNullOrEmpty(value))
            return $"the value of {name} is empty (a header value, or remove the header)";
        if (value.Length > MaxHeaderValueLength)
            return $"the value of {name} is {value.Length} characters long (at most {MaxHeaderValueLength})";
        if (value.Any(c => c is '\r' or '\n'))
            return $"the value of {name} contains CR or LF (header injection)";
        if (value.Any(c => (c < 0x20 && c != '\t') || c == 0x7f || c > 0xff))
            return $"the value of {name} contains a control character or a character outside ISO-8859-1";
        if (value[0] is ' ' or '\t' || value[^1] is ' ' or '\t')
            return $"the value of {name} starts or ends with white space";
        return null;
    }

    /// <summary>
    /// An error status with a custom page, 400-599, written as the status itself: three ASCII digits, nothing around
    /// them. "0404", "+404" or " 404" would read as 404 too, so one vhost could name the same status under two keys;
    /// they are refused, so that a key and its status are one and the same.
    /// </summary>
    public static string? ParseErrorStatus(string key, out int status)
    {
        ArgumentNullException.ThrowIfNull(key);
        var meant = int.TryParse(key, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) && IsErrorStatus(n) ? n : 0;
        status = meant != 0 && key == meant.ToString(CultureInfo.InvariantCulture) ? meant : 0;
        if (status != 0)
            return null;
        return meant != 0
            ? $"'{key}' is not written as a status: write {meant} (three digits: no sign, leading zero or space)"
            : $"'{key}' is not an error status ({MinErrorStatus}-{MaxErrorStatus})";
    }

    /// <summary>A URL path under the vhost's root: starts with '/', no query, fragment, '.' or '..' segment, backslash or control character.</summary>
    public static string? CheckRootPath(string? path)
    {
        if (string.IsNullOrEmpty(path) || path[0] != '/' || path.EndsWith('/') || path.Any(c => c < 0x20 || c == 0x7f || c is '\\' or '?' or '#' or '%')
            || path.Split('/').Any(s => s is "." or ".."))
            return $"'{path}' is not the URL path of a file under the vhost's root such as /errors/404.html (no query, '%', '.' or '..' segments)";
        return null;
    }

    /// <summary>A redirect's source: a decoded URL path starting with '/'.</summary>
    public static string? CheckRedirectFrom(string? from)
    {
        if (string.IsNullOrEmpty(from) || from[0] != '/' || from.Any(c => c <= 0x20 || c == 0x7f || c is '?' or '#'))
            return $"'{from}' is not a URL path such as /old (starting with '/', no query, fragment, space or control character)";
        return null;
    }

    /// <summary>A redirect's target: a path, or an absolute http(s) URL.</summary>
    public static string? CheckRedirectTo(string? to)
    {
        var ok = !string.IsNullOrEmpty(to) && !to.Any(c => c <= 0x20 || c >= 0x7f) && !to.Contains('#', StringComparison.Ordinal)
            && ((to[0] == '/' && !to.StartsWith("//", StringComparison.Ordinal))
                || (Uri.TryCreate(to, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" && uri.UserInfo.Length == 0 && uri.Host.Length > 0));
        return ok ? null : $"'{to}' is neither a path such as /new nor an absolute http or https URL (ASCII, no space, fragment or user info)";
    }

    /// <summary>A redirect that would send the client back to where it matched: same path, or into its own prefix.</summary>
    public static string? CheckRedirectLoop(string from, string to, bool prefix)
    {
        ArgumentNullException.ThrowIfNull(from);
        ArgumentNullException.ThrowIfNull(to);
        if (to[0] != '/')
            return null;
        var target = to.Split('?', 2)[0];
        if (!prefix)
            return target == from ? $"'{from}' redirects to itself" : null;
        return Matches(from, target, out _) ? $"'{to}' lies under the prefix '{from}' it redirects from: the client would be redirected forever" : null;
    }

    public static string? CheckRedirectStatus(string? text, out int status)
    {
        if (int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out status) && RedirectStatuses.Contains(status))
            return null;
        return $"'{text}' is not a redirect status (301, 302, 303, 307 or 308)";
    }

    /// <summary>
    /// Prefix match on whole segments: <c>/old</c> (or <c>/old/</c>) matches <c>/old</c>, <c>/old/</c> and <c>/old/x</c>,
    /// not <c>/older</c>; <paramref name="rest"/> is what follows the prefix without its trailing slash ("", "/", "/x").
    /// </summary>
    public static bool Matches(string from, string path, out string rest)
    {
        ArgumentNullException.ThrowIfNull(from);
        ArgumentNullException.ThrowIfNull(path);
        var stem = from.TrimEnd('/');
        rest = string.Empty;
        if (!path.StartsWith(stem, StringComparison.Ordinal) || (path.Length > stem.Length && path[stem.Length] != '/'))
            return false;
        rest = path[stem.Length..];
        return true;
    }

    /// <summary>A media type for <c>compression.types</c>: <c>type/subtype</c> or <c>type/*</c>, and not an already-compressed one.</summary>
    public static string? CheckCompressType(string? type)
    {
        var parts = (type ?? string.Empty).Split('/');
        if (parts.Length != 2 || parts[0].Length == 0 || parts[1].Length == 0 || parts[0] == "*" || !parts[0].All(IsTokenChar)
            || !(parts[1] == "*" || parts[1].All(IsTokenChar)) || type!.Any(char.IsAsciiLetterUpper))
            return $"'{type}' is not a lower-case media type such as text/css or text/*";
        if (IsNeverCompressed(type!))
            return $"{type} is already compressed (images, audio, video, woff fonts, archives, PDF) or streamed: compressing it again costs CPU and saves nothing";
        return null;
    }

    /// <summary>True for a type in <see cref="NeverCompressTypes"/> (directly or through its <c>type/*</c>), SVG and icons excepted.</summary>
    public static bool IsNeverCompressed(string type)
    {
        ArgumentNullException.ThrowIfNull(type);
        if (CompressibleImages.Contains(type, StringComparer.Ordinal))
            return false;
        var slash = type.IndexOf('/', StringComparison.Ordinal);
        return NeverCompressTypes.Contains(type, StringComparer.Ordinal)
            || (slash > 0 && NeverCompressTypes.Contains(type[..(slash + 1)] + "*", StringComparer.Ordinal));
    }

    public static string? CheckCompressionLevel(string? level) =>
        CompressionLevels.Contains(level, StringComparer.Ordinal) ? null : $"'{level}' is not a compression level (fastest, optimal or smallest)";

    /// <summary>The canonical host must be one of the vhost's own names (its name or a non-wildcard alias).</summary>
    public static string? CheckCanonicalHost(string? host, IEnumerable<string> names)
    {
        var normalized = host is null ? string.Empty : HostNames.Normalize(host);
        if (normalized.Length == 0 || normalized.StartsWith('*') || !names.Select(HostNames.Normalize).Contains(normalized, StringComparer.Ordinal))
            return $"'{host}' is not a name of this vhost (its name or one of its aliases, not a wildcard)";
        return null;
    }

    /// <summary>Every check above over a whole <see cref="VhostWeb"/> (the worker, before it serves): the first problem, or null.</summary>
    public static string? Validate(VhostWeb web, IEnumerable<string> names)
    {
        ArgumentNullException.ThrowIfNull(web);
        if (web.MaxBodySize is < 1 or > MaxMaxBodySize)
            return $"maxBodySize {web.MaxBodySize} is outside 1..{MaxMaxBodySize}";
        if (web.Compression is { } c && (c.MinSize is < 0 or > MaxCompressMinSize || CheckCompressionLevel(c.Level) is not null || c.Types.Any(t => CheckCompressType(t) is not null)))
            return "compression: invalid minSize, level or types";
        foreach (var h in web.Headers)
        {
            if (CheckHeader(h.Name, h.Value) is { } why)
                return $"headers:{h.Name}: {why}";
        }

        foreach (var p in web.ErrorPages)
        {
            if (!IsErrorStatus(p.Status) || CheckRootPath(p.Path) is not null)
                return $"errorPages:{p.Status}: invalid status or path '{p.Path}'";
        }

        if (web.CanonicalHost is not null && CheckCanonicalHost(web.CanonicalHost, names) is { } hostWhy)
            return $"canonicalHost: {hostWhy}";
        foreach (var r in web.Redirects)
        {
            if ((CheckRedirectFrom(r.From) ?? CheckRedirectTo(r.To) ?? CheckRedirectStatus(r.Status.ToString(CultureInfo.InvariantCulture), out _) ?? CheckRedirectLoop(r.From, r.To, r.Prefix)) is { } why)
                return $"redirects: {why}";
        }

        return null;
    }

    /// <summary>RFC 9110 tchar.</summary>
    private static bool IsTokenChar(char c) => char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c, StringComparison.Ordinal);
}
