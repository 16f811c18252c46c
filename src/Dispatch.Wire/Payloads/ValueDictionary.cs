using System.Collections;
using System.Diagnostics.CodeAnalysis;
using System.Text.Json.Serialization;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// An immutable string-to-string map (ordinal keys) that compares by value, whatever the order it was built in; a
/// JSON object on the wire. See <see cref="ValueList{T}"/>.
/// </summary>
[JsonConverter(typeof(ValueDictionaryJsonConverter))]
public sealed class ValueDictionary : IReadOnlyDictionary<string, string>, IEquatable<ValueDictionary>
{
    private readonly SortedDictionary<string, string> _items;

    public ValueDictionary(IEnumerable<KeyValuePair<string, string>> items)
    {
        _items = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in items)
            _items[key] = value;
    }

    public static ValueDictionary Empty { get; } = new([]);

    public int Count => _items.Count;

    public IEnumerable<string> Keys => _items.Keys;

    public IEnumerable<string> Values => _items.Values;

    public string this[string key] => _items[key];

    public static bool operator ==(ValueDictionary? left, ValueDictionary? right) => left is null ? right is null : left.Equals(right);

    public static bool operator !=(ValueDictionary? left, ValueDictionary? right) => !(left == right);

    public bool ContainsKey(string key) => _items.ContainsKey(key);

    public bool TryGetValue(string key, [MaybeNullWhen(false)] out string value) => _items.TryGetValue(key, out value);

    public bool Equals(ValueDictionary? other) => other is not null && _items.SequenceEqual(other._items);

    public override bool Equals(object? obj) => Equals(obj as ValueDictionary);

    public override int GetHashCode()
    {
        var hash = default(HashCode);
        foreach (var (key, value) in _items)
        {
            hash.Add(key);
            hash.Add(value);
        }

        return hash.ToHashCode();
    }

    public override string ToString() => string.Join(",", _items.Select(p => $"{p.Key}={p.Value}"));

    public IEnumerator<KeyValuePair<string, string>> GetEnumerator() => _items.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}
