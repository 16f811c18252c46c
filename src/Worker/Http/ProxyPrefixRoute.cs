using Dispatch.Wire.Payloads;

namespace Dispatch.Worker.Http;

/// <summary>One proxied prefix of a vhost, checked: its upstream parsed, its timeouts resolved.</summary>
internal sealed record ProxyPrefixRoute(string Prefix, ProxyUpstream Upstream, TimeSpan ConnectTimeout, TimeSpan ReadTimeout)
{
    /// <summary>Under the prefix, or the prefix without its trailing slash (<c>/app</c> for <c>/app/</c>).</summary>
    public bool Matches(string path) =>
        path.StartsWith(Prefix, StringComparison.Ordinal)
        || (path.Length == Prefix.Length - 1 && path.Length > 0 && Prefix.StartsWith(path, StringComparison.Ordinal));
}
