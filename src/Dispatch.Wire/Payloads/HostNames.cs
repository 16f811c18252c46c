namespace Dispatch.Wire.Payloads;

/// <summary>
/// Host name normalisation and matching, shared by the master (validation), the dispatcher (routing)
/// and the worker (421). Names are ASCII, compared case-insensitively, one trailing dot ignored;
/// "*.example.org" matches exactly one more label ("a.example.org", not "example.org" nor
/// "a.b.example.org"), as certificates do; an exact name beats a wildcard.
/// </summary>
public sealed class HostMatcher<T>
    where T : class
{
    private readonly Dictionary<string, T> _exact = new(StringComparer.Ordinal);
    private readonly Dictionary<string, T> _wildcard = new(StringComparer.Ordinal);
    private readonly Dictionary<string, T>.AlternateLookup<ReadOnlySpan<char>> _exactLookup;
    private readonly Dictionary<string, T>.AlternateLookup<ReadOnlySpan<char>> _wildcardLookup;

    public HostMatcher()
    {
        _exactLookup = _exact.GetAlternateLookup<ReadOnlySpan<char>>();
        _wildcardLookup = _wildcard.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    public int Count => _exact.Count + _wildcard.Count;

    /// <summary>Adds a name ("a.example" or "*.example"); false when it is already present.</summary>
    public bool TryAdd(string pattern, T value)
    {
        var name = HostNames.Normalize(pattern);
        return name.StartsWith("*.", StringComparison.Ordinal)
            ? _wildcard.TryAdd(name[2..], value)
            : _exact.TryAdd(name, value);
    }

    /// <summary>Looks up an already normalised host (lowercase, no port, no trailing dot).</summary>
    public T? Match(ReadOnlySpan<char> host)
    {
        if (_exactLookup.TryGetValue(host, out var value))
            return value;
        var dot = host.IndexOf('.');
        if (dot > 0 && _wildcardLookup.TryGetValue(host[(dot + 1)..], out value))
            return value;
        return null;
    }
}

public static class HostNames
{
    /// <summary>What <see cref="IsValidPattern"/> accepts, in words (for refusals).</summary>
    public const string PatternRule = "labels of letters, digits, '-' and '_', 1-63 long, not starting or ending with '-', at most 253 in all";

    /// <summary>Lowercases and drops one trailing dot.</summary>
    public static string Normalize(string name)
    {
        var n = name.Trim().ToLowerInvariant();
        return n.EndsWith('.') ? n[..^1] : n;
    }

    /// <summary>True for a DNS name or a "*." wildcard of one: letters, digits, '-', '_', labels of 1-63, at most 253.</summary>
    public static bool IsValidPattern(string name)
    {
        var n = Normalize(name);
        if (n.StartsWith("*.", StringComparison.Ordinal))
            n = n[2..];
        if (n.Length is 0 or > 253)
            return false;
        foreach (var label in n.Split('.'))
        {
            if (label.Length is 0 or > 63 || label[0] == '-' || label[^1] == '-')
                return false;
            foreach (var c in label)
            {
                if (!(c is >= 'a' and <= 'z' or >= '0' and <= '9' or '-' or '_'))
                    return false;
            }
        }

        return true;
    }
}
