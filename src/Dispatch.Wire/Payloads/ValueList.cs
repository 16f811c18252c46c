using System.Collections;
using System.Runtime.CompilerServices;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// An immutable list that compares by value (element by element, in order), so that a record holding one compares by
/// value too: the config and its projections are diffed by record equality (<c>==</c>), never by hand-written
/// fingerprints. A record property of this type that goes over the wire names its converter:
/// <c>[property: JsonConverter(typeof(ValueListJsonConverter&lt;T&gt;))]</c>.
/// </summary>
[CollectionBuilder(typeof(ValueList), nameof(ValueList.Create))]
public sealed class ValueList<T> : IReadOnlyList<T>, IEquatable<ValueList<T>>
{
    private readonly T[] _items;

    internal ValueList(T[] items) => _items = items;

#pragma warning disable CA1000 // The list's own factories: ValueList<string>.Empty reads better than a helper elsewhere.
    public static ValueList<T> Empty { get; } = new([]);

    public int Count => _items.Length;

    public T this[int index] => _items[index];

    public static implicit operator ValueList<T>(T[] items) => FromArray(items);

    public static implicit operator ValueList<T>(List<T> items) => FromList(items);

    public static ValueList<T> FromArray(T[] items) => items.Length == 0 ? Empty : new([.. items]);

    public static ValueList<T> FromList(List<T> items) => items.Count == 0 ? Empty : new([.. items]);
#pragma warning restore CA1000

    public static bool operator ==(ValueList<T>? left, ValueList<T>? right) => left is null ? right is null : left.Equals(right);

    public static bool operator !=(ValueList<T>? left, ValueList<T>? right) => !(left == right);

    public bool Equals(ValueList<T>? other) =>
        other is not null && (ReferenceEquals(this, other) || _items.AsSpan().SequenceEqual(other._items, EqualityComparer<T>.Default));

    public override bool Equals(object? obj) => Equals(obj as ValueList<T>);

    public override int GetHashCode()
    {
        var hash = default(HashCode);
        foreach (var item in _items)
            hash.Add(item);
        return hash.ToHashCode();
    }

    public override string ToString() => $"[{string.Join(", ", _items)}]";

    public ReadOnlySpan<T>.Enumerator GetEnumerator() => new ReadOnlySpan<T>(_items).GetEnumerator();

    IEnumerator<T> IEnumerable<T>.GetEnumerator() => ((IEnumerable<T>)_items).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => _items.GetEnumerator();
}

/// <summary>Builds <see cref="ValueList{T}"/> from collection expressions (<c>[a, b]</c>, <c>[.. items]</c>).</summary>
public static class ValueList
{
    public static ValueList<T> Create<T>(ReadOnlySpan<T> items) => items.IsEmpty ? ValueList<T>.Empty : new(items.ToArray());
}
