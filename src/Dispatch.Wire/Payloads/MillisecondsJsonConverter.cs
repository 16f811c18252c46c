using System.Text.Json;
using System.Text.Json.Serialization;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// A duration on the wire as whole milliseconds (a JSON integer, 0 to <see cref="int.MaxValue"/>), read into a
/// <see cref="TimeSpan"/> once: the payload records hold durations, not numbers a reader must remember the unit of.
/// A negative, fractional or larger number is refused (the payload is then malformed).
/// </summary>
public sealed class MillisecondsJsonConverter : JsonConverter<TimeSpan>
{
    public override TimeSpan Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt32(out var ms) || ms < 0)
            throw new JsonException("expected a duration in whole milliseconds (0 to 2147483647)");
        return TimeSpan.FromMilliseconds(ms);
    }

    public override void Write(Utf8JsonWriter writer, TimeSpan value, JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(writer);
        var ms = value.TotalMilliseconds;
        if (ms < 0 || ms > int.MaxValue)
            throw new JsonException($"{value} is not a duration the wire carries (0 to 2147483647 ms)");
        writer.WriteNumberValue((int)ms);
    }
}
