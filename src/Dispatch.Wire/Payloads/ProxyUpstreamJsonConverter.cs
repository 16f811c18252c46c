using System.Text.Json;
using System.Text.Json.Serialization;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// A <see cref="ProxyUpstream"/> on the wire as its canonical spelling (a JSON string), read with the one parser
/// (<see cref="ProxyUpstream.TryParse"/>): a worker never holds an upstream the config loader would have refused.
/// </summary>
public sealed class ProxyUpstreamJsonConverter : JsonConverter<ProxyUpstream>
{
    public override ProxyUpstream Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.String)
            throw new JsonException("expected an upstream string");
        return ProxyUpstream.TryParse(reader.GetString(), out var upstream, out var problem) ? upstream : throw new JsonException(problem);
    }

    public override void Write(Utf8JsonWriter writer, ProxyUpstream value, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(value);
        writer.WriteStringValue(value.ToString());
    }
}
