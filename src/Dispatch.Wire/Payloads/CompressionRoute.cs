using System.Text.Json.Serialization;

namespace Dispatch.Wire.Payloads;

/// <summary>Response compression of a vhost (gzip and brotli, negotiated with Accept-Encoding).</summary>
/// <param name="MinSize">Bodies shorter than this many bytes (when their length is known) are sent as they are.</param>
/// <param name="Types">Media types compressed (<c>text/*</c> style wildcards allowed); never an already-compressed type.</param>
/// <param name="Precompressed">Serve a static file's <c>.br</c> / <c>.gz</c> sibling when the client accepts it.</param>
/// <param name="Level"><c>fastest</c>, <c>optimal</c> or <c>smallest</c> (.NET's compression levels).</param>
public sealed record CompressionRoute(int MinSize, [property: JsonConverter(typeof(ValueListJsonConverter<string>))] ValueList<string> Types, bool Precompressed, string Level)
{
    public static CompressionRoute Default { get; } = new(VhostWebRules.DefaultCompressMinSize, [.. VhostWebRules.DefaultCompressTypes], true, "fastest");
}
