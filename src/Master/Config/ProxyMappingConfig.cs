using Dispatch.Protocol.Routing;

namespace Dispatch.Master.Config;

/// <summary>One proxied URL prefix of a vhost, as loaded: the upstream parsed once (<see cref="ProxyUpstream.TryParse"/>).</summary>
/// <param name="UrlPrefix">An absolute URL path ending in <c>/</c>.</param>
/// <param name="ConnectTimeout">How long connecting to the application may take (then 504).</param>
/// <param name="ReadTimeout">How long the application may stay silent: before its response headers, and between two reads
/// of its response body or of an upgraded (WebSocket) connection (then 504, or the connection is closed).</param>
internal sealed record ProxyMappingConfig(string UrlPrefix, ProxyUpstream Upstream, TimeSpan ConnectTimeout, TimeSpan ReadTimeout);
