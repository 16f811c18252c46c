namespace Dispatch.Wire.Payloads;

/// <summary>
/// The URL prefix of a proxy mapping, checked by one rule for the config loader and the worker: an absolute URL path
/// (starts with <c>/</c>), no <c>.</c> or <c>..</c> segment, no empty segment (<c>//</c>), no space, control character,
/// backslash, <c>%</c>, <c>?</c> or <c>#</c> (it is matched against the decoded path). A missing trailing <c>/</c> is added.
/// </summary>
public static class ProxyPrefix
{
    /// <summary>The prefix with its trailing slash, or <see langword="false"/> and why not.</summary>
    public static bool TryNormalize(string? prefix, out string normalized, out string error)
    {
        normalized = string.Empty;
        error = Refusal(prefix);
        if (error.Length != 0)
            return false;
        normalized = prefix!.EndsWith('/') ? prefix : prefix + "/";
        return true;
    }

    private static string Refusal(string? prefix)
    {
        if (string.IsNullOrEmpty(prefix) || prefix[0] != '/')
            return $"'{prefix}' is not a URL path prefix such as / or /app/";
        foreach (var c in prefix)
        {
            if (c <= 0x20 || c == 0x7f || c is '\\' or '%' or '?' or '#')
                return $"'{prefix}' contains a space, a control character or one of \\ % ? # (it is matched against the decoded path)";
        }

        var segments = prefix.TrimEnd('/').Split('/').Skip(1);
        if (prefix.Contains("//", StringComparison.Ordinal) || segments.Any(s => s is "." or ".."))
            return $"'{prefix}' has an empty, '.' or '..' segment";
        return string.Empty;
    }
}
