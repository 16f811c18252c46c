using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// A <see cref="ValueList{T}"/> as a JSON array. Named on each property (a closed type: no reflection, trim- and
/// AOT-safe); the element type must be known to the serializer context (<see cref="SnapshotJson"/>). A <c>null</c> element
/// is refused (the list's type says none can be), and any refusal inside an element names the element's index.
/// </summary>
public sealed class ValueListJsonConverter<T> : JsonConverter<ValueList<T>>
{
    public override ValueList<T> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (reader.TokenType != JsonTokenType.StartArray)
            throw new JsonException($"expected an array of {typeof(T).Name}");
        var info = (JsonTypeInfo<T>)options.GetTypeInfo(typeof(T));
        var items = new List<T>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            try
            {
                items.Add(JsonSerializer.Deserialize(ref reader, info) ?? throw new JsonException($"null in an array of {typeof(T).Name}"));
            }
            catch (JsonException e)
            {
                // The element was read as a document of its own: its refusal gets its index in the list.
                throw JsonPaths.Nest(e, items.Count);
            }
        }

        if (reader.TokenType != JsonTokenType.EndArray)
            throw new JsonException("unterminated array");
        return ValueList<T>.FromList(items);
    }

    public override void Write(Utf8JsonWriter writer, ValueList<T> value, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(value);
        ArgumentNullException.ThrowIfNull(options);
        var info = (JsonTypeInfo<T>)options.GetTypeInfo(typeof(T));
        writer.WriteStartArray();
        foreach (var item in value)
            JsonSerializer.Serialize(writer, item, info);
        writer.WriteEndArray();
    }
}
