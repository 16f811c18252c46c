using System.Text.Json;
using System.Text.Json.Serialization;

namespace Dispatch.Protocol.Routing;

/// <summary>What the dispatcher needs to route: vhost names to pools, and its own limits. Sent as a sealed memfd.</summary>
public sealed record RouteSnapshot(long Version, DispatcherSettings Settings, VhostRoute[] Vhosts);

/// <summary>Bounds on what the dispatcher reads before routing.</summary>
public sealed record DispatcherSettings(int HeaderTimeoutMs, int MaxRequestHead, int WorkerWaitMs, int HandshakeTimeoutMs);

/// <summary>
/// A vhost as the dispatcher sees it: its names, its pool and, for a terminated TLS vhost, the
/// certificates it presents (chain and key, read by the master). No paths, no uids.
/// </summary>
public sealed record VhostRoute(string Name, string[] Aliases, string Pool, string TlsMode, CertificatePem[] Certificates);

/// <summary>A chain (leaf first) and its private key, PEM.</summary>
public sealed record CertificatePem(string ChainPem, string KeyPem);

/// <summary>TLS modes of a vhost.</summary>
public static class TlsModes
{
    /// <summary>Not reachable over TLS.</summary>
    public const string None = "none";

    /// <summary>The dispatcher terminates TLS with the vhost's certificate and proxies plaintext.</summary>
    public const string Terminate = "terminate";
}

/// <summary>What a worker needs to serve its pool: its vhosts and where their files are.</summary>
public sealed record PoolSettings(string Name, WorkerVhost[] Vhosts);

public sealed record WorkerVhost(string Name, string[] Aliases, string Root, bool DirectoryListing, string[] Index);

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
