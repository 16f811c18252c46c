using System.Diagnostics.CodeAnalysis;
using Dispatch.Wire;
using Dispatch.Wire.Payloads;
using Microsoft.AspNetCore.Http;

namespace Dispatch.Worker.Http;

/// <summary>
/// One vhost at run time: its settings as the master sent them, confined files, request pipeline, access log and error
/// log, the login it serves (an identity vhost) and the worker's own CGI limits.
/// </summary>
internal sealed class Vhost(WorkerVhost settings, ConfinedFileProvider files, Serilog.ILogger accessLog, Serilog.ILogger? errorLog = null, CgiLimits? cgiLimits = null)
{
    public WorkerVhost Settings { get; } = settings;

    /// <summary>For an identity vhost: the login every request must carry (verified, and remembered); null: none.</summary>
    public RequestIdentity? Identity { get; } = settings.Identity is { } identity ? new RequestIdentity(identity.Login, identity.Hash, identity.Realm) : null;

    public CgiLimits CgiLimits { get; } = cgiLimits ?? CgiLimits.Default;

    public string Name => Settings.Name;

    public ConfinedFileProvider Files { get; } = files;

    public Serilog.ILogger AccessLog { get; } = accessLog;

    /// <summary>The vhost's own error log (<c>errorLog</c>), or null: its problems then go to the worker's log. See <see cref="RequestErrors"/>.</summary>
    public Serilog.ILogger? ErrorLog { get; } = errorLog;

    public RequestDelegate Pipeline { get; set; } = static _ => Task.CompletedTask;

    /// <summary>What this vhost served in this worker (the metrics per vhost).</summary>
    public VhostCounters Traffic { get; } = new();
}

/// <summary>
/// Maps a request's host name to a <see cref="Vhost"/> in O(1) with the shared
/// <see cref="HostMatcher{T}"/> (the dispatcher routes with the same rules): one dictionary of exact names and aliases,
/// one of wildcard suffixes (<c>*.c.localhost</c> is stored as <c>c.localhost</c> and looked up with the request host
/// minus its first label, so it matches exactly one extra label). Exact names win over wildcards. Case-insensitive
/// (the request host is lower-cased into a stack buffer), so matching a request allocates nothing.
/// </summary>
internal sealed class VhostTable
{
    private const int MaxHostLength = 253;
    private readonly HostMatcher<Vhost> _matcher = new();

    public VhostTable(IEnumerable<Vhost> vhosts)
    {
        var owners = new Dictionary<string, Vhost>(StringComparer.Ordinal);
        var all = new List<Vhost>();
        foreach (var vhost in vhosts)
        {
            all.Add(vhost);
            foreach (var configured in vhost.Settings.Aliases.Prepend(vhost.Settings.Name))
            {
                var name = NormalizeConfiguredName(configured);
                if (!owners.TryAdd(name, vhost) || !_matcher.TryAdd(name, vhost))
                {
                    throw new ArgumentException(
                        $"Host name '{configured}' of vhost '{vhost.Name}' is already used by vhost '{owners[name].Name}'.",
                        nameof(vhosts));
                }
            }
        }

        All = all;
    }

    public IReadOnlyList<Vhost> All { get; }

    /// <summary>Lower-cases a configured name or alias, strips one trailing dot, and checks its shape.</summary>
    public static string NormalizeConfiguredName(string configured)
    {
        ArgumentNullException.ThrowIfNull(configured);
        if (!HostNames.IsValidPattern(configured))
        {
            throw new ArgumentException($"'{configured}' is not a valid host name or '*.'-alias.", nameof(configured));
        }

        return HostNames.Normalize(configured);
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

    /// <summary>Finds the vhost of a host name as returned by <see cref="TryGetHostName"/> (any case).</summary>
    public bool TryFind(ReadOnlySpan<char> host, [NotNullWhen(true)] out Vhost? vhost)
    {
        vhost = null;
        if (host.Length > MaxHostLength)
        {
            return false;
        }

        Span<char> lower = stackalloc char[host.Length];
        host.ToLowerInvariant(lower);
        vhost = _matcher.Match(lower);
        return vhost is not null;
    }
}
