using Dispatch.Wire.Payloads;

namespace Dispatch.Master.Config;

internal sealed record VhostConfig(
    string Name,
    ValueList<string> Aliases,
    string Pool,
    string Root,
    bool DirectoryListing,
    ValueList<string> Index,
    string TlsMode,
    ValueList<Certificates.LoadedCertificate> Certificates,
    string HttpMode,
    string Engine,
    string? PassthroughCertDir,
    ValueList<CgiRoute> Cgi,
    TimeSpan CgiTimeout,
    string? AccessLog,
    ValueList<ProxyRoute> Proxy,
    string? ErrorLog = null,
    Dispatch.Wire.Payloads.VhostWeb? Web = null)
{
    /// <summary>The access log's format (<c>accessLogFormat</c>): <c>combined</c> (the default) or <c>json</c>.</summary>
    public string AccessLogFormat { get; init; } = "combined";

    /// <summary>The vhost's FastCGI (PHP) application; null: none.</summary>
    public FastCgiConfig? FastCgi { get; init; }

    /// <summary>Front-controller routing (<c>tryFiles</c>, as nginx's try_files): empty when not configured.</summary>
    public ValueList<string> TryFiles { get; init; } = [];

    /// <summary>False when a name of another pool is covered by this vhost's certificate (set after all vhosts are read).</summary>
    public bool OfferH2 { get; init; } = true;

    public IEnumerable<string> Names => [Name, .. Aliases];

    /// <summary>Set for <c>"identity": "authenticated"</c>: the logins (from the credentials file) and their pools; <see cref="Pool"/> is then empty.</summary>
    public IdentityConfig? Identity { get; init; }

    /// <summary>True when <paramref name="pool"/>'s workers serve this vhost: its own pool, or a login's pool of an identity vhost.</summary>
    public bool ServedBy(string pool) => Identity is { } identity ? identity.Users.Any(u => u.Pool == pool) : Pool == pool;
}
