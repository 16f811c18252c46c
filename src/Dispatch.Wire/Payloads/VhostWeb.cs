using System.Text.Json.Serialization;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// A vhost's HTTP features, applied by its worker to every request of the vhost (see docs/vhost-features.md): response
/// compression, the request body limit, extra response headers, custom error pages and redirects. Validated by the
/// master (<see cref="VhostWebRules"/>, errors with their JSON path) and again by the worker when it starts.
/// </summary>
/// <param name="Compression">gzip and brotli for compressible types; <see langword="null"/>: off.</param>
/// <param name="MaxBodySize">Largest request body in bytes (413 beyond it, Content-Length or chunked, HTTP/1.1 and h2).</param>
/// <param name="Headers">Set on every response of the vhost (errors and redirects included), replacing a handler's own.</param>
/// <param name="ErrorPages">Status → file under the root served instead of the worker's own text for that error.</param>
/// <param name="CanonicalHost">A name of the vhost every other name of it is redirected to (301/308); null: none.</param>
/// <param name="Redirects">Path redirects, first match wins.</param>
public sealed record VhostWeb(
    CompressionRoute? Compression,
    long MaxBodySize,
    [property: JsonConverter(typeof(ValueListJsonConverter<HeaderRoute>))] ValueList<HeaderRoute> Headers,
    [property: JsonConverter(typeof(ValueListJsonConverter<ErrorPageRoute>))] ValueList<ErrorPageRoute> ErrorPages,
    string? CanonicalHost,
    [property: JsonConverter(typeof(ValueListJsonConverter<RedirectRoute>))] ValueList<RedirectRoute> Redirects)
{
    /// <summary>What a vhost without any of these keys gets.</summary>
    public static VhostWeb Default { get; } = new(CompressionRoute.Default, VhostWebRules.DefaultMaxBodySize, [], [], null, []);
}
