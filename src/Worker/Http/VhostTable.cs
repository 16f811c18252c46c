using System.Diagnostics.CodeAnalysis;
using Microsoft.AspNetCore.Http;

namespace Dispatch.Worker.Http;

/// <summary>One vhost at run time: its settings, confined files, request pipeline and access log.</summary>
internal sealed class Vhost(VhostSettings settings, ConfinedFileProvider files, Serilog.ILogger accessLog)
{
    public VhostSettings Settings { get; } = settings;

    public string Name => Settings.Name;

    public ConfinedFileProvider Files { get; } = files;

    public Serilog.ILogger AccessLog { get; } = accessLog;

    public RequestDelegate Pipeline { get; set; } = static _ => Task.CompletedTask;
}

/// <summary>
/// Maps a request's host name to a <see cref="Vhost"/> in O(1): one dictionary of exact names and aliases, one of
/// wildcard suffixes (<c>*.c.localhost</c> is stored as <c>c.localhost</c> and looked up with the request host minus
/// its first label, so it matches exactly one extra label). Exact names win over wildcards. Case-insensitive, and
/// lookups take spans, so matching a request allocates nothing.
/// </summary>
internal sealed class VhostTable
{
    private static readonly System.Buffers.SearchValues<char> ForbiddenInNames = System.Buffers.SearchValues.Create("*:/\\ \t[]@?#%");

    private readonly Dictionary<string, Vhost>.AlternateLookup<ReadOnlySpan<char>> _exact;
    private readonly Dictionary<string, Vhost>.AlternateLookup<ReadOnlySpan<char>> _wildcard;

    public VhostTable(IEnumerable<Vhost> vhosts)
    {
        var exact = new Dictionary<string, Vhost>(StringComparer.OrdinalIgnoreCase);
        var wildcard = new Dictionary<string, Vhost>(StringComparer.OrdinalIgnoreCase);
        var all = new List<Vhost>();
        foreach (var vhost in vhosts)
        {
            all.Add(vhost);
            foreach (var configured in vhost.Settings.Aliases.Prepend(vhost.Settings.Name))
            {
                var name = NormalizeConfiguredName(configured);
                var (table, key) = name.StartsWith("*.", StringComparison.Ordinal) ? (wildcard, name[2..]) : (exact, name);
                if (!table.TryAdd(key, vhost))
                {
                    throw new ArgumentException(
                        $"Host name '{configured}' of vhost '{vhost.Name}' is already used by vhost '{table[key].Name}'.",
                        nameof(vhosts));
                }
            }
        }

        _exact = exact.GetAlternateLookup<ReadOnlySpan<char>>();
        _wildcard = wildcard.GetAlternateLookup<ReadOnlySpan<char>>();
        All = all;
    }

    public IReadOnlyList<Vhost> All { get; }

    /// <summary>Lower-cases a configured name or alias, strips one trailing dot, and checks its shape.</summary>
    public static string NormalizeConfiguredName(string configured)
    {
        ArgumentNullException.ThrowIfNull(configured);
        var name = configured.Trim().ToLowerInvariant();
        if (name.EndsWith('.'))
        {
            name = name[..^1];
        }

        var labels = name.StartsWith("*.", StringComparison.Ordinal) ? name[2..] : name;
        if (labels.Length == 0
            || labels.StartsWith('.')
            || labels.EndsWith('.')
            || labels.Contains("..", StringComparison.Ordinal)
            || labels.AsSpan().IndexOfAny(ForbiddenInNames) >= 0)
        {
            throw new ArgumentException($"'{configured}' is not a valid host name or '*.'-alias.", nameof(configured));
        }

        return name;
    }

    /// <summary>
    /// Extracts the host name from a Host header / :authority value: strips the port and one trailing dot.
    /// An IPv6 literal keeps its brackets (and matches no vhost). False when nothing is left.
    /// </summary>
    public static bool TryGetHostName(ReadOnlySpan<char> authority, out ReadOnlySpan<char> host)
    {
        authority = authority.Trim();
        if (authority.StartsWith('['))
        {
            var close = authority.IndexOf(']');
            host = close < 0 ? default : authority[..(close + 1)];
        }
        else
        {
            var colon = authority.IndexOf(':');
            host = colon < 0 ? authority : authority[..colon];
            if (host.EndsWith('.'))
            {
                host = host[..^1];
            }
        }

        return !host.IsEmpty;
    }

    public bool TryFind(ReadOnlySpan<char> host, [NotNullWhen(true)] out Vhost? vhost)
    {
        if (_exact.TryGetValue(host, out vhost))
        {
            return true;
        }

        var dot = host.IndexOf('.');
        if (dot > 0 && _wildcard.TryGetValue(host[(dot + 1)..], out vhost))
        {
            return true;
        }

        vhost = null;
        return false;
    }
}
