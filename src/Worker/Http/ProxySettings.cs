namespace Dispatch.Worker.Http;

/// <summary>
/// Reverse proxy for a vhost: which URL prefixes are passed, with HTTP/1.1, to the tenant's own application (Node,
/// Python, PHP-FPM behind an HTTP server…) listening on a Unix socket or a loopback TCP port.
/// </summary>
/// <param name="Mappings">URL prefix → upstream; the longest matching prefix wins. Prefixes must not overlap the vhost's
/// CGI prefixes (one being a prefix of the other).</param>
/// <param name="ConnectTimeout">How long connecting to the upstream may take before the client gets 504;
/// <see langword="null"/> or not positive means <see cref="DefaultConnectTimeout"/>.</param>
/// <param name="ResponseTimeout">How long the upstream may take to send its response headers before the client gets
/// 504, counted from the moment the request (or the last chunk of its body) was passed on; <see langword="null"/> or
/// not positive means <see cref="DefaultResponseTimeout"/>. The response body, once started, has no time limit of ours
/// (streams and long polls are the application's business; a client that leaves ends it).</param>
public sealed record ProxySettings(
    IReadOnlyList<ProxyMapping> Mappings,
    TimeSpan? ConnectTimeout = null,
    TimeSpan? ResponseTimeout = null)
{
    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(5);

    public static readonly TimeSpan DefaultResponseTimeout = TimeSpan.FromSeconds(60);

    internal TimeSpan EffectiveConnectTimeout =>
        ConnectTimeout is { } timeout && timeout > TimeSpan.Zero ? timeout : DefaultConnectTimeout;

    internal TimeSpan EffectiveResponseTimeout =>
        ResponseTimeout is { } timeout && timeout > TimeSpan.Zero ? timeout : DefaultResponseTimeout;
}

/// <summary>
/// Requests whose path starts with <paramref name="UrlPrefix"/> are proxied to <paramref name="Upstream"/>, with the
/// request target unchanged (<c>/app/x?y</c> reaches the application as <c>/app/x?y</c>, as nginx's
/// <c>proxy_pass</c> without a URI does).
/// </summary>
/// <param name="UrlPrefix">An absolute URL path such as <c>/</c> or <c>/app/</c> (a missing trailing slash is added; the
/// prefix without its slash, <c>/app</c>, is proxied too). Matched case-sensitively against the decoded request path.</param>
/// <param name="Upstream"><c>unix:/absolute/path.sock</c>, or <c>http://127.0.0.1:PORT</c> / <c>http://[::1]:PORT</c>.
/// Nothing else: no host names, no other addresses, no https, no path.</param>
public sealed record ProxyMapping(string UrlPrefix, string Upstream);
