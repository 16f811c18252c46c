namespace Dispatch.Worker.Http;

/// <summary>One virtual host served by this worker.</summary>
/// <param name="Name">Canonical host name (matched case-insensitively, without port or trailing dot).</param>
/// <param name="Aliases">Other host names; an alias starting with <c>*.</c> matches exactly one extra label.</param>
/// <param name="Root">Absolute path of the document root; nothing outside its real path is ever served.</param>
/// <param name="DirectoryListing">Whether a directory without an index file is listed (otherwise 404).</param>
/// <param name="IndexFiles">Index file names tried in order for a directory request; empty means <c>index.html</c>.</param>
/// <param name="Cgi">CGI script mappings and limits; <see langword="null"/>: no CGI.</param>
/// <param name="Proxy">Reverse-proxy mappings to the tenant's own application; <see langword="null"/>: none.</param>
/// <param name="Identity">An identity vhost: every request must be this worker's own login (else 421); <see langword="null"/>: none.</param>
/// <param name="FastCgi">The vhost's FastCGI (PHP) application; <see langword="null"/>: none.</param>
/// <param name="TryFiles">Front-controller routing (<c>$uri</c>, <c>$uri/</c>, then a fallback); <see langword="null"/> or empty: none.</param>
/// <param name="Web">Compression, body limit, headers, error pages, redirects (docs/vhost-features.md); <see langword="null"/>:
/// <see cref="Dispatch.Protocol.Routing.VhostWeb.Default"/>.</param>
public sealed record VhostSettings(
    string Name,
    IReadOnlyList<string> Aliases,
    string Root,
    bool DirectoryListing,
    IReadOnlyList<string> IndexFiles,
    CgiSettings? Cgi = null,
    string? TlsCertDir = null,
    ProxySettings? Proxy = null,
    RequestIdentity? Identity = null,
    Dispatch.Worker.FastCgi.FastCgiSettings? FastCgi = null,
    IReadOnlyList<string>? TryFiles = null,
    Dispatch.Protocol.Routing.VhostWeb? Web = null);
