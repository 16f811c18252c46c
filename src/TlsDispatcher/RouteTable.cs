using Dispatch.TlsDispatcher.Tls;
using Dispatch.Wire.Payloads;
using Serilog;

namespace Dispatch.TlsDispatcher;

/// <summary>
/// The routing view of one snapshot: host → vhost route, the TLS credentials of terminated vhosts
/// (built once, when the snapshot arrives), and the dispatcher's limits.
/// </summary>
internal sealed class RouteTable : IDisposable
{
    private readonly HostMatcher<VhostRoute> _matcher = new();
    private readonly Dictionary<string, BcServerCredentials> _credentials = new(StringComparer.Ordinal);
    private readonly Dictionary<string, OpenSslCredentials> _openssl = new(StringComparer.Ordinal);
    private readonly Dictionary<string, PoolRoute> _pools = new(StringComparer.Ordinal);
    // Per vhost: the pools whose workers serve it (its own; for an identity vhost, each login's).
    private readonly Dictionary<string, HashSet<string>> _vhostPools = new(StringComparer.Ordinal);
    // Per terminated vhost: its route, so that the next table reuses the credentials of vhosts whose engine, h2 offer
    // and certificates did not change (value equality: a reload of thousands of vhosts parses only the changed keys).
    private readonly Dictionary<string, VhostRoute> _terminated = new(StringComparer.Ordinal);

    /// <param name="previous">The table this one replaces (its credentials are shared, never disposed: open connections may use them).</param>
    public RouteTable(RouteSnapshot snapshot, ILogger log, RouteTable? previous = null)
    {
        Version = snapshot.Version;
        Settings = snapshot.Settings;
        HttpsPort = snapshot.HttpsPort;
        foreach (var p in snapshot.Pools)
            _pools[p.Name] = p;
        foreach (var v in snapshot.Vhosts)
        {
            _vhostPools[v.Name] = [.. v.Identity is { } identity ? identity.Users.Select(u => u.Pool) : [v.Pool]];
            _matcher.TryAdd(v.Name, v);
            foreach (var a in v.Aliases)
                _matcher.TryAdd(a, v);
            if (v.Name == snapshot.DefaultVhost)
                Default = v;
            if (v.TlsMode != TlsModes.Terminate)
                continue;
            _terminated[v.Name] = v;
            if (previous is not null && previous._terminated.GetValueOrDefault(v.Name) is { } old && SameCredentials(old, v))
            {
                if (previous._openssl.TryGetValue(v.Name, out var reusedOpenSsl))
                    _openssl[v.Name] = reusedOpenSsl;
                else if (previous._credentials.TryGetValue(v.Name, out var reused))
                    _credentials[v.Name] = reused;
                Reused++;
                continue;
            }

            try
            {
                if (v.Engine == TlsEngines.OpenSsl)
                    _openssl[v.Name] = new OpenSslCredentials(v.Certificates, v.OfferH2);
                else
                    _credentials[v.Name] = new BcServerCredentials(v.Certificates.Select(c => BcCertifiedKey.FromPem(c.ChainPem, c.KeyPem)).ToList());
            }
            catch (Exception e)
            {
                // Whatever went wrong with one vhost's certificate must not take the others down.
                log.Error("Vhost {Vhost}: its certificate cannot be used, so it is unreachable over TLS: {Reason}", v.Name, e.Message);
            }
        }
    }

    public long Version { get; }

    /// <summary>Terminated vhosts whose credentials came from the previous table unchanged.</summary>
    public int Reused { get; }

    private static bool SameCredentials(VhostRoute a, VhostRoute b) => a.Engine == b.Engine && a.OfferH2 == b.OfferH2 && a.Certificates == b.Certificates;

    public DispatcherSettings Settings { get; }

    public int Count => _matcher.Count;

    public int HttpsPort { get; }

    /// <summary>Where unknown or missing names go; null when they are refused (strict).</summary>
    public VhostRoute? Default { get; }

    /// <summary>The vhost for a host name (or SNI), falling back to the default vhost if one is configured.</summary>
    public VhostRoute? Route(string? host) => (host is null ? null : _matcher.Match(host)) ?? Default;

    /// <summary>How to balance a pool (defaults when the snapshot does not name it).</summary>
    public PoolRoute PoolPolicy(string pool) => _pools.GetValueOrDefault(pool) ?? new PoolRoute(pool, 0, false, 0, 60_000);

    public IEnumerable<PoolRoute> Pools => _pools.Values;

    /// <summary>Whether the vhost named <paramref name="vhost"/> (its configured name, not an alias) is routed.</summary>
    public bool HasVhost(string vhost) => _vhostPools.ContainsKey(vhost);

    /// <summary>Whether workers of <paramref name="pool"/> serve the vhost named <paramref name="vhost"/>: its pool, or for an identity vhost a login's.</summary>
    public bool Serves(string pool, string vhost) => _vhostPools.TryGetValue(vhost, out var pools) && pools.Contains(pool);

    public BcServerCredentials? CredentialsFor(VhostRoute route) => _credentials.GetValueOrDefault(route.Name);

    public OpenSslCredentials? OpenSslCredentialsFor(VhostRoute route) => _openssl.GetValueOrDefault(route.Name);

    public void Dispose()
    {
        foreach (var c in _credentials.Values)
            c.Dispose();
        foreach (var c in _openssl.Values)
            c.Dispose();
    }
}
