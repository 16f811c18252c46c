using System.Text.Json;
using System.Text.Json.Serialization;

namespace Dispatch.Protocol.Routing;

/// <summary>What the dispatcher needs to route: vhost names to pools, and its own limits. Sent as a sealed memfd.</summary>
/// <param name="DefaultVhost">Where a request with no SNI / Host, or an unknown one, goes; null: refuse it (strict).</param>
/// <param name="HttpsPort">The port https redirects point to (the first TLS listener's).</param>
public sealed record RouteSnapshot(long Version, DispatcherSettings Settings, VhostRoute[] Vhosts, string? DefaultVhost, int HttpsPort, PoolRoute[] Pools);

/// <summary>
/// How the dispatcher balances a pool: at most <paramref name="MaxConnectionsPerWorker"/> connections
/// per worker (0: no limit) before it asks for another; one connection per worker when
/// <paramref name="OneShot"/>; workers idle for <paramref name="IdleTimeoutMs"/> beyond
/// <paramref name="MinSpare"/> are let go. <paramref name="TlsHandOff"/>: its workers take a terminated TLS session itself
/// (<see cref="Wire.ConnectionMode.HandedTls"/>: the client's socket and the session's keys) instead of plaintext over a
/// socketpair the dispatcher pumps (BouncyCastle engine only; the openssl engine cannot export keys).
/// </summary>
public sealed record PoolRoute(string Name, int MaxConnectionsPerWorker, bool OneShot, int MinSpare, int IdleTimeoutMs, bool TlsHandOff = false);

/// <summary>Bounds on what the dispatcher reads before routing.</summary>
public sealed record DispatcherSettings(int HeaderTimeoutMs, int MaxRequestHead, int WorkerWaitMs, int HandshakeTimeoutMs);

/// <summary>
/// A vhost as the dispatcher sees it: its names, its pool and, for a terminated TLS vhost, the
/// certificates it presents (chain and key, read by the master). No paths, no uids.
/// </summary>
/// <param name="HttpMode">Plain HTTP: <see cref="HttpModes.Serve"/> (pass to the worker) or <see cref="HttpModes.Redirect"/> (answer a redirect to https; ACME challenges still reach the worker).</param>
/// <param name="OfferH2">False when the certificate also covers names of another pool: HTTP/2 connection coalescing would carry this tenant's requests (and cookies) to the other's worker.</param>
/// <param name="Engine">Who terminates TLS in the dispatcher: <see cref="TlsEngines.BouncyCastle"/> (TLS 1.2) or <see cref="TlsEngines.OpenSsl"/> (.NET SslStream: TLS 1.3 and 1.2).</param>
public sealed record VhostRoute(string Name, string[] Aliases, string Pool, string TlsMode, CertificatePem[] Certificates, string HttpMode, bool OfferH2, string Engine);

/// <summary>TLS termination engines of the dispatcher.</summary>
public static class TlsEngines
{
    public const string BouncyCastle = "bouncycastle";

    public const string OpenSsl = "openssl";
}

/// <summary>What a vhost does with plain HTTP.</summary>
public static class HttpModes
{
    public const string Serve = "serve";

    public const string Redirect = "redirect";
}

/// <summary>A chain (leaf first) and its private key, PEM.</summary>
public sealed record CertificatePem(string ChainPem, string KeyPem);

/// <summary>TLS modes of a vhost.</summary>
public static class TlsModes
{
    /// <summary>Not reachable over TLS.</summary>
    public const string None = "none";

    /// <summary>The dispatcher terminates TLS with the vhost's certificate and proxies plaintext.</summary>
    public const string Terminate = "terminate";

    /// <summary>The dispatcher passes the raw connection to a worker, which terminates TLS with the tenant's own key.</summary>
    public const string Passthrough = "passthrough";
}

/// <summary>What a worker needs to serve its pool: its vhosts and where their files are.</summary>
public sealed record PoolSettings(string Name, WorkerVhost[] Vhosts, bool OneShot);

public sealed record WorkerVhost(string Name, string[] Aliases, string Root, bool DirectoryListing, string[] Index, CgiRoute[] Cgi, int CgiTimeoutMs, string? PassthroughCertDir, ProxyRoute[] Proxy);

/// <summary>URL prefix → the tenant's own application (<see cref="ProxyUpstream"/>, canonical spelling), with its timeouts
/// (0: the worker's default).</summary>
public sealed record ProxyRoute(string UrlPrefix, string Upstream, int ConnectTimeoutMs = 0, int ReadTimeoutMs = 0)
{
    public const int DefaultConnectTimeoutMs = 5_000;

    public const int DefaultReadTimeoutMs = 60_000;
}

/// <summary>URL prefix → directory of CGI scripts (run as the tenant, inside the worker's jail).</summary>
public sealed record CgiRoute(string UrlPrefix, string Directory);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(RouteSnapshot))]
[JsonSerializable(typeof(PoolSettings))]
public sealed partial class SnapshotJson : JsonSerializerContext
{
    public static byte[] Serialize(RouteSnapshot snapshot) => JsonSerializer.SerializeToUtf8Bytes(snapshot, Default.RouteSnapshot);

    public static byte[] Serialize(PoolSettings pool) => JsonSerializer.SerializeToUtf8Bytes(pool, Default.PoolSettings);

    public static RouteSnapshot ParseSnapshot(ReadOnlySpan<byte> json) =>
        JsonSerializer.Deserialize(json, Default.RouteSnapshot) ?? throw new JsonException("route snapshot is null");

    public static PoolSettings ParsePool(ReadOnlySpan<byte> json) =>
        JsonSerializer.Deserialize(json, Default.PoolSettings) ?? throw new JsonException("pool settings are null");
}
