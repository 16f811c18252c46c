using System.Text.Json;
using System.Text.Json.Serialization;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// A <see cref="ValueDictionary"/> as a JSON object of strings. A key twice is refused (the map would otherwise keep
/// whichever came last, and two readers of the same bytes could disagree on which value holds).
/// </summary>
public sealed class ValueDictionaryJsonConverter : JsonConverter<ValueDictionary>
{
    public override ValueDictionary Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
            throw new JsonException("expected an object of strings");
        var items = new Dictionary<string, string>(StringComparer.Ordinal);
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var key = reader.GetString()!;
            if (!reader.Read() || reader.TokenType != JsonTokenType.String)
                throw new JsonException($"'{key}': expected a string");
            if (!items.TryAdd(key, reader.GetString()!))
                throw new JsonException($"'{key}' appears twice in the object");
        }

        if (reader.TokenType != JsonTokenType.EndObject)
            throw new JsonException("unterminated object");
        return new ValueDictionary(items);
    }

    public override void Write(Utf8JsonWriter writer, ValueDictionary value, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(value);
        writer.WriteStartObject();
        foreach (var (key, item) in value)
            writer.WriteString(key, item);
        writer.WriteEndObject();
    }
}
