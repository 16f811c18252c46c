using System.Text.Json;
using System.Text.Json.Serialization;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// What the dispatcher needs to route: vhost names to pools, and its own limits. Sent as a sealed memfd. Immutable and
/// value-equal all the way down (<see cref="ValueList{T}"/>, no arrays), like the worker's <see cref="PoolSettings"/>.
/// </summary>
/// <param name="DefaultVhost">Where a request with no SNI / Host, or an unknown one, goes; null: refuse it (strict).</param>
/// <param name="HttpsPort">The port https redirects point to (the first TLS listener's).</param>
public sealed record RouteSnapshot(
    long Version,
    DispatcherSettings Settings,
    [property: JsonConverter(typeof(ValueListJsonConverter<VhostRoute>))] ValueList<VhostRoute> Vhosts,
    string? DefaultVhost,
    int HttpsPort,
    [property: JsonConverter(typeof(ValueListJsonConverter<PoolRoute>))] ValueList<PoolRoute> Pools);

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
public sealed record DispatcherSettings(int HeaderTimeoutMs, int MaxRequestHead, int WorkerWaitMs, int HandshakeTimeoutMs)
{
    /// <summary>A write to a client (or to a worker's socketpair) that makes no progress for this long closes the connection.</summary>
    public int SendTimeoutMs { get; init; } = 60_000;

    /// <summary>Connections per client address and in all (config: dispatcher:limits).</summary>
    public ClientLimitSettings Limits { get; init; } = ClientLimitSettings.Default;
}

/// <summary>
/// The dispatcher's client limits: connections it holds at once (reading the first bytes, in a TLS handshake, or pumping
/// terminated TLS) and new connections per second, per client address and in all; 0: no limit.
/// </summary>
public sealed record ClientLimitSettings(int PerAddressConnections, int PerAddressPerSecond, int GlobalConnections, int GlobalPerSecond)
{
    /// <summary>Per address: 1024 connections held at once; in all: 16384; no rate limit (one address may be a load balancer
    /// without the PROXY protocol, or a benchmark).</summary>
    public static ClientLimitSettings Default { get; } = new(1024, 0, 16_384, 0);
}

/// <summary>
/// A vhost as the dispatcher sees it: its names, its pool and, for a terminated TLS vhost, the
/// certificates it presents (chain and key, read by the master). No paths, no uids.
/// </summary>
/// <param name="HttpMode">Plain HTTP: <see cref="HttpModes.Serve"/> (pass to the worker) or <see cref="HttpModes.Redirect"/> (answer a redirect to https; ACME challenges still reach the worker).</param>
/// <param name="OfferH2">False when the certificate also covers names of another pool: HTTP/2 connection coalescing would carry this tenant's requests (and cookies) to the other's worker.</param>
/// <param name="Engine">Who terminates TLS in the dispatcher: <see cref="TlsEngines.BouncyCastle"/> (TLS 1.2) or <see cref="TlsEngines.OpenSsl"/> (.NET SslStream: TLS 1.3 and 1.2).</param>
/// <param name="Identity">For a vhost with <c>"identity": "authenticated"</c>: its logins, their hashes and pools, and the login limits; the vhost's own <paramref name="Pool"/> is then empty.</param>
public sealed record VhostRoute(
    string Name,
    [property: JsonConverter(typeof(ValueListJsonConverter<string>))] ValueList<string> Aliases,
    string Pool,
    string TlsMode,
    [property: JsonConverter(typeof(ValueListJsonConverter<CertificatePem>))] ValueList<CertificatePem> Certificates,
    string HttpMode,
    bool OfferH2,
    string Engine,
    VhostIdentity? Identity = null);

/// <summary>
/// An identity vhost as the dispatcher sees it: the Basic realm, each login's hash (from the credentials file, read by
/// the master) and pool, and the limits on failed logins: at most <paramref name="FailuresPerAddress"/> from one
/// client address and <paramref name="FailuresPerLogin"/> for one login within <paramref name="FailureWindowMs"/>,
/// after which further attempts get 429 without a hash being computed.
/// </summary>
public sealed record VhostIdentity(string Realm, [property: JsonConverter(typeof(ValueListJsonConverter<IdentityUser>))] ValueList<IdentityUser> Users, int FailuresPerAddress, int FailuresPerLogin, int FailureWindowMs);

/// <summary>A login of an identity vhost, its password hash (bcrypt or SHA-crypt) and the pool that serves it.</summary>
public sealed record IdentityUser(string Login, string Hash, string Pool);

/// <summary>What a worker of a login's pool knows of an identity vhost: its own login and hash, nothing of the others.</summary>
public sealed record WorkerIdentity(string Login, string Hash, string Realm);

/// <summary>TLS termination engines of the dispatcher.</summary>
public static class TlsEngines
{
    public const string BouncyCastle = "bouncycastle";

    public const string OpenSsl = "openssl";

    /// <summary>Every engine: a route snapshot naming another is refused when it is read (<see cref="PayloadChecks"/>).</summary>
    public static IReadOnlyList<string> All { get; } = [BouncyCastle, OpenSsl];
}

/// <summary>What a vhost does with plain HTTP.</summary>
public static class HttpModes
{
    public const string Serve = "serve";

    public const string Redirect = "redirect";

    /// <summary>Every mode: a route snapshot naming another is refused when it is read (<see cref="PayloadChecks"/>).</summary>
    public static IReadOnlyList<string> All { get; } = [Serve, Redirect];
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

    /// <summary>Every mode: a route snapshot naming another is refused when it is read (<see cref="PayloadChecks"/>).</summary>
    public static IReadOnlyList<string> All { get; } = [None, Terminate, Passthrough];
}

/// <summary>What a worker needs to serve its pool: its vhosts and where their files are.</summary>
public sealed record PoolSettings(string Name, [property: JsonConverter(typeof(ValueListJsonConverter<WorkerVhost>))] ValueList<WorkerVhost> Vhosts, bool OneShot)
{
    /// <summary>The worker's write and idle timeouts; null: the defaults of <see cref="WorkerTimeouts"/>.</summary>
    public WorkerTimeouts? Timeouts { get; init; }
}

/// <summary>
/// A worker's timeouts (config: a pool's <c>timeouts</c>; whole milliseconds on the wire). <paramref name="Send"/>: a
/// write to a client that makes no progress for this long closes the connection (nginx's send_timeout);
/// <paramref name="KeepAlive"/>: an idle connection between requests; <paramref name="RequestHeaders"/>: the time to
/// receive a request's headers (after the first request: the dispatcher reads the first head);
/// <paramref name="MinRequestBodyRate"/> and <paramref name="MinResponseRate"/>: Kestrel's minimum data rates in bytes
/// per second after a 5 s grace period (0: off).
/// </summary>
public sealed record WorkerTimeouts(
    [property: JsonPropertyName("sendMs"), JsonConverter(typeof(MillisecondsJsonConverter))] TimeSpan Send,
    [property: JsonPropertyName("keepAliveMs"), JsonConverter(typeof(MillisecondsJsonConverter))] TimeSpan KeepAlive,
    [property: JsonPropertyName("requestHeadersMs"), JsonConverter(typeof(MillisecondsJsonConverter))] TimeSpan RequestHeaders,
    int MinRequestBodyRate,
    int MinResponseRate)
{
    /// <summary>send 60 s, keepAlive 75 s (nginx's), requestHeaders 30 s, both rates 240 bytes/s (Kestrel's).</summary>
    public static WorkerTimeouts Default { get; } = new(TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(75), TimeSpan.FromSeconds(30), 240, 240);
}

/// <summary>
/// A vhost as a worker of its pool serves it: the one model from the config (<c>Projections.WorkerVhost</c> in the
/// master) to the worker, which uses it as it arrives. Durations are <see cref="TimeSpan"/>s (whole milliseconds on the
/// wire, as the property names say), upstreams <see cref="ProxyUpstream"/>s: each parsed once, by the config loader.
/// </summary>
/// <param name="Name">Canonical host name (matched case-insensitively, without port or trailing dot).</param>
/// <param name="Aliases">Other host names; an alias starting with <c>*.</c> matches exactly one extra label.</param>
/// <param name="Root">Absolute path of the document root; nothing outside its real path is ever served.</param>
/// <param name="DirectoryListing">Whether a directory without an index file is listed (otherwise 404).</param>
/// <param name="Index">Index file names tried in order for a directory request; empty means <c>index.html</c>.</param>
/// <param name="Cgi">URL prefix → CGI script directory; the longest matching prefix wins. Empty: no CGI.</param>
/// <param name="CgiTimeout">Wall-clock limit of one CGI run; zero: <see cref="DefaultCgiTimeout"/>.</param>
/// <param name="PassthroughCertDir">For a passthrough TLS vhost: the tenant's certificate directory (certbot layout),
/// read by the worker only; null: none.</param>
/// <param name="Proxy">URL prefix → the tenant's own application; the longest matching prefix wins. Empty: none.</param>
/// <param name="Identity">Set for an identity vhost: every request must carry this login's Basic credentials, else 421.</param>
/// <param name="FastCgi">The vhost's FastCGI application; null: none.</param>
/// <param name="TryFiles">Front-controller routing (<c>$uri</c>, <c>$uri/</c>, then a fallback); null or empty: none.</param>
/// <param name="Web">The vhost's HTTP features (compression, body limit, headers, error pages, redirects); null: <see cref="VhostWeb.Default"/>.</param>
/// <param name="AccessLogFormat">The format of its access log's lines, one of <see cref="AccessLogFormats"/>; null: <c>combined</c>.</param>
public sealed record WorkerVhost(
    string Name,
    [property: JsonConverter(typeof(ValueListJsonConverter<string>))] ValueList<string> Aliases,
    string Root,
    bool DirectoryListing,
    [property: JsonConverter(typeof(ValueListJsonConverter<string>))] ValueList<string> Index,
    [property: JsonConverter(typeof(ValueListJsonConverter<CgiRoute>))] ValueList<CgiRoute> Cgi,
    [property: JsonPropertyName("cgiTimeoutMs"), JsonConverter(typeof(MillisecondsJsonConverter))] TimeSpan CgiTimeout,
    string? PassthroughCertDir,
    [property: JsonConverter(typeof(ValueListJsonConverter<ProxyRoute>))] ValueList<ProxyRoute> Proxy,
    WorkerIdentity? Identity = null,
    FastCgiRoute? FastCgi = null,
    [property: JsonConverter(typeof(ValueListJsonConverter<string>))] ValueList<string>? TryFiles = null,
    VhostWeb? Web = null,
    string? AccessLogFormat = null)
{
    /// <summary>The access log's formats (<c>accessLogFormat</c>): nginx's combined format and ours after it, or one JSON object per line.</summary>
    public static readonly string[] AccessLogFormats = ["combined", "json"];

    /// <summary>A CGI run's limit when the config names none (<c>cgiTimeout</c>).</summary>
    public static readonly TimeSpan DefaultCgiTimeout = TimeSpan.FromSeconds(30);

    /// <summary><see cref="CgiTimeout"/>, or <see cref="DefaultCgiTimeout"/> when zero.</summary>
    public TimeSpan EffectiveCgiTimeout() => CgiTimeout > TimeSpan.Zero ? CgiTimeout : DefaultCgiTimeout;

    /// <summary><see cref="Index"/>, or <c>index.html</c> when empty.</summary>
    public IReadOnlyList<string> EffectiveIndex() => Index.Count > 0 ? Index : DefaultIndex;

    private static readonly ValueList<string> DefaultIndex = ["index.html"];
}

/// <summary>
/// The vhost's FastCGI application (PHP through php-fpm): an operator-run socket (<paramref name="Socket"/>), or a php-fpm
/// the worker starts itself as the tenant (<paramref name="Spawn"/>; then <paramref name="Socket"/> is empty).
/// </summary>
/// <param name="ConnectTimeout">How long connecting may take before the client gets 504; zero: <see cref="DefaultConnectTimeout"/>.</param>
/// <param name="ReadTimeout">How long the application may stay silent (no record) while the worker waits for its answer
/// before the client gets 504 (or, once the response started, the connection is aborted); re-armed by each request body
/// chunk passed on. Zero: <see cref="DefaultReadTimeout"/>.</param>
public sealed record FastCgiRoute(
    string Socket,
    [property: JsonPropertyName("connectTimeoutMs"), JsonConverter(typeof(MillisecondsJsonConverter))] TimeSpan ConnectTimeout,
    [property: JsonPropertyName("readTimeoutMs"), JsonConverter(typeof(MillisecondsJsonConverter))] TimeSpan ReadTimeout,
    FastCgiSpawnRoute? Spawn)
{
    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(5);

    public static readonly TimeSpan DefaultReadTimeout = TimeSpan.FromSeconds(60);

    /// <summary>The operator's socket; null when the worker spawns php-fpm (its socket is then the worker's to choose).</summary>
    public string? OperatorSocket() => Spawn is null ? Socket : null;

    public TimeSpan EffectiveConnectTimeout() => ConnectTimeout > TimeSpan.Zero ? ConnectTimeout : DefaultConnectTimeout;

    public TimeSpan EffectiveReadTimeout() => ReadTimeout > TimeSpan.Zero ? ReadTimeout : DefaultReadTimeout;
}

/// <summary>
/// A php-fpm started by the worker: its binary, its one pool's <c>pm.max_children</c> and idle timeout
/// (<c>pm.process_idle_timeout</c>; zero: 10 s), and the directory (created by the master, owned by the pool's uid, mode
/// 0700; empty: a fresh private directory under the temporary directory, for tests) for its socket and generated config,
/// and the pool's <c>php_admin_value</c> settings (checked by the master: no line breaks, quotes, backslashes, ';' or
/// brackets).
/// </summary>
public sealed record FastCgiSpawnRoute(
    string Program,
    int MaxChildren,
    [property: JsonPropertyName("idleTimeoutMs"), JsonConverter(typeof(MillisecondsJsonConverter))] TimeSpan IdleTimeout,
    string Directory,
    ValueDictionary? PhpAdminValues = null);

/// <summary>
/// URL prefix → the tenant's own application, with its timeouts (zero: the defaults). On the wire the upstream is its
/// canonical spelling and the timeouts whole milliseconds; in memory they are what they mean.
/// </summary>
/// <param name="UrlPrefix">An absolute URL path ending in <c>/</c> (<see cref="ProxyPrefix"/>; <c>/app/</c> also proxies
/// <c>/app</c>). Matched case-sensitively against the decoded request path.</param>
/// <param name="ConnectTimeout">How long connecting to the application may take (then 504).</param>
/// <param name="ReadTimeout">How long the application may stay silent: before its response headers, and between two reads
/// of its response body or of an upgraded (WebSocket) connection (then 504, or the connection is closed), like nginx's
/// <c>proxy_read_timeout</c>.</param>
public sealed record ProxyRoute(
    string UrlPrefix,
    [property: JsonConverter(typeof(ProxyUpstreamJsonConverter))] ProxyUpstream Upstream,
    [property: JsonPropertyName("connectTimeoutMs"), JsonConverter(typeof(MillisecondsJsonConverter))] TimeSpan ConnectTimeout,
    [property: JsonPropertyName("readTimeoutMs"), JsonConverter(typeof(MillisecondsJsonConverter))] TimeSpan ReadTimeout)
{
    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(5);

    public static readonly TimeSpan DefaultReadTimeout = TimeSpan.FromSeconds(60);

    public TimeSpan EffectiveConnectTimeout() => ConnectTimeout > TimeSpan.Zero ? ConnectTimeout : DefaultConnectTimeout;

    public TimeSpan EffectiveReadTimeout() => ReadTimeout > TimeSpan.Zero ? ReadTimeout : DefaultReadTimeout;
}

/// <summary>URL prefix → directory of CGI scripts (run as the tenant, inside the worker's jail).</summary>
/// <param name="UrlPrefix">An absolute URL path such as <c>/cgi-bin/</c> (a missing trailing slash is added). Matched
/// case-sensitively against the decoded request path: <c>/cgi-bin/tool.sh/extra?q</c> runs <c>Directory/tool.sh</c>
/// with PATH_INFO <c>/extra</c>.</param>
/// <param name="Directory">Absolute path of the script directory; it need not lie under the vhost's root. Scripts are
/// regular executable files whose real path (symlinks resolved) lies inside the directory's real path. When it lies
/// inside the document root, static serving never returns anything from it (no script source leaks).</param>
public sealed record CgiRoute(string UrlPrefix, string Directory);

/// <summary>
/// The JSON of the payloads that travel in sealed memfds (the dispatcher's <see cref="RouteSnapshot"/>, a worker's
/// <see cref="PoolSettings"/>), read as strictly as the binary messages: an unknown member, a member twice, a missing
/// constructor parameter, a <c>null</c> where the type says it cannot be (a list, a string, a record, a list's element)
/// and every refusal of <see cref="PayloadChecks"/> (duplicate names, numbers out of their range) fail the parse with a
/// <see cref="JsonException"/> naming the member's JSON path. The receiver treats it as any malformed message (fatal).
/// </summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    AllowDuplicateProperties = false,
    RespectNullableAnnotations = true,
    RespectRequiredConstructorParameters = true)]
[JsonSerializable(typeof(RouteSnapshot))]
[JsonSerializable(typeof(VhostRoute))]
[JsonSerializable(typeof(PoolRoute))]
[JsonSerializable(typeof(CertificatePem))]
[JsonSerializable(typeof(IdentityUser))]
[JsonSerializable(typeof(PoolSettings))]
[JsonSerializable(typeof(WorkerVhost))]
[JsonSerializable(typeof(CgiRoute))]
[JsonSerializable(typeof(ProxyRoute))]
[JsonSerializable(typeof(HeaderRoute))]
[JsonSerializable(typeof(ErrorPageRoute))]
[JsonSerializable(typeof(RedirectRoute))]
[JsonSerializable(typeof(string))]
public sealed partial class SnapshotJson : JsonSerializerContext
{
    public static byte[] Serialize(RouteSnapshot snapshot) => JsonSerializer.SerializeToUtf8Bytes(snapshot, Default.RouteSnapshot);

    public static byte[] Serialize(PoolSettings pool) => JsonSerializer.SerializeToUtf8Bytes(pool, Default.PoolSettings);

    /// <exception cref="JsonException">Malformed, or refused by <see cref="PayloadChecks.Check(RouteSnapshot)"/>; the message names the JSON path.</exception>
    public static RouteSnapshot ParseSnapshot(ReadOnlySpan<byte> json) => Parse(json, Default.RouteSnapshot, PayloadChecks.Check, "route snapshot");

    /// <exception cref="JsonException">Malformed, or refused by <see cref="PayloadChecks.Check(PoolSettings)"/>; the message names the JSON path.</exception>
    public static PoolSettings ParsePool(ReadOnlySpan<byte> json) => Parse(json, Default.PoolSettings, PayloadChecks.Check, "pool settings");

    /// <summary>Reads and checks a payload; every refusal says <paramref name="what"/>, the JSON path, and why.</summary>
    private static T Parse<T>(ReadOnlySpan<byte> json, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> info, Action<T> check, string what)
        where T : class
    {
        try
        {
            var payload = JsonSerializer.Deserialize(json, info) ?? throw new JsonException("null instead of an object");
            check(payload);
            return payload;
        }
        catch (JsonException e)
        {
            throw JsonPaths.Absolute(e, what);
        }
    }
}
