namespace Dispatch.Worker.Http;

/// <summary>
/// Requests whose path starts with <paramref name="UrlPrefix"/> are proxied to <paramref name="Upstream"/>, with the
/// request target unchanged (<c>/app/x?y</c> reaches the application as <c>/app/x?y</c>, as nginx's
/// <c>proxy_pass</c> without a URI does).
/// </summary>
/// <param name="UrlPrefix">An absolute URL path such as <c>/</c> or <c>/app/</c> (<see cref="Protocol.Routing.ProxyPrefix"/>:
/// a missing trailing slash is added; the prefix without its slash, <c>/app</c>, is proxied too). Matched
/// case-sensitively against the decoded request path.</param>
/// <param name="Upstream">As <see cref="Protocol.Routing.ProxyUpstream.TryParse"/> accepts: <c>unix:/absolute/path.sock</c>,
/// <c>http://127.x.y.z:PORT</c> or <c>http://[::1]:PORT</c>. Nothing else: no host names, no other addresses, no https,
/// no path.</param>
/// <param name="ConnectTimeout">This mapping's connect timeout; <see langword="null"/>: the vhost's.</param>
/// <param name="ReadTimeout">This mapping's read timeout; <see langword="null"/>: the vhost's.</param>
public sealed record ProxyMapping(string UrlPrefix, string Upstream, TimeSpan? ConnectTimeout = null, TimeSpan? ReadTimeout = null);
