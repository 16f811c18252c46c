using System.Text.Json;
using System.Text.Json.Serialization;

namespace Dispatch.Wire.Payloads;

/// <summary>A <see cref="ValueDictionary"/> as a JSON object of strings.</summary>
public sealed class ValueDictionaryJsonConverter : JsonConverter<ValueDictionary>
{
    public override ValueDictionary Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
            throw new JsonException("expected an object of strings");
        var items = new List<KeyValuePair<string, string>>();
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var key = reader.GetString()!;
            if (!reader.Read() || reader.TokenType != JsonTokenType.String)
                throw new JsonException($"'{key}': expected a string");
            items.Add(new(key, reader.GetString()!));
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
