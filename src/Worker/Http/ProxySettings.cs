namespace Dispatch.Worker.Http;

/// <summary>
/// Reverse proxy for a vhost: which URL prefixes are passed, with HTTP/1.1, to the tenant's own application (Node,
/// Python, PHP-FPM behind an HTTP server…) listening on a Unix socket or a loopback TCP port.
/// </summary>
/// <param name="Mappings">URL prefix → upstream; the longest matching prefix wins. Prefixes must not overlap the vhost's
/// CGI prefixes (one being a prefix of the other).</param>
/// <param name="ConnectTimeout">Default for the mappings: how long connecting to the upstream may take before the client
/// gets 504; <see langword="null"/> or not positive means <see cref="DefaultConnectTimeout"/>.</param>
/// <param name="ReadTimeout">Default for the mappings: how long the upstream may stay silent — before its response
/// headers (counted from the moment the request or the last chunk of its body was passed on; then 504), and between
/// two reads of its response body or of an upgraded connection (then the connection is closed), like nginx's
/// <c>proxy_read_timeout</c>; <see langword="null"/> or not positive means <see cref="DefaultReadTimeout"/>.</param>
public sealed record ProxySettings(
    IReadOnlyList<ProxyMapping> Mappings,
    TimeSpan? ConnectTimeout = null,
    TimeSpan? ReadTimeout = null)
{
    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromMilliseconds(Protocol.Routing.ProxyRoute.DefaultConnectTimeoutMs);

    public static readonly TimeSpan DefaultReadTimeout = TimeSpan.FromMilliseconds(Protocol.Routing.ProxyRoute.DefaultReadTimeoutMs);

    /// <summary>The mapping's connect timeout, else the vhost's, else the default.</summary>
    internal TimeSpan EffectiveConnectTimeout(ProxyMapping? mapping = null) =>
        Positive(mapping?.ConnectTimeout) ?? Positive(ConnectTimeout) ?? DefaultConnectTimeout;

    /// <summary>The mapping's read timeout, else the vhost's, else the default.</summary>
    internal TimeSpan EffectiveReadTimeout(ProxyMapping? mapping = null) =>
        Positive(mapping?.ReadTimeout) ?? Positive(ReadTimeout) ?? DefaultReadTimeout;

    private static TimeSpan? Positive(TimeSpan? value) => value is { } t && t > TimeSpan.Zero ? t : null;
}
