using System.Text.Json;
using Dispatch.Wire.Payloads;

namespace Dispatch.Tests.Wire.Payloads;

/// <summary>A <see cref="ValueDictionary"/> read from JSON: a key twice is refused, not silently the last one.</summary>
public class ValueDictionaryJsonConverterTests
{
    [Fact]
    public void An_object_of_strings_reads_and_a_key_twice_is_refused()
    {
        var map = JsonSerializer.Deserialize<ValueDictionary>("""{"memory_limit":"128M","max_execution_time":"30"}""")!;
        Assert.Equal("128M", map["memory_limit"]);
        var e = Assert.Throws<JsonException>(() => JsonSerializer.Deserialize<ValueDictionary>("""{"memory_limit":"128M","memory_limit":"1G"}"""));
        Assert.Contains("'memory_limit' appears twice", e.Message, StringComparison.Ordinal);
        Assert.Throws<JsonException>(() => JsonSerializer.Deserialize<ValueDictionary>("""{"memory_limit":null}"""));
    }
}
