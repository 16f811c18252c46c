using System.Text.Json;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// Where in a payload a refusal was, as one absolute JSON path (in the message and in <see cref="JsonException.Path"/>).
/// The serializer knows the path of the member it was reading, but a <see cref="ValueListJsonConverter{T}"/> reads each
/// element as a document of its own (whose paths start again at <c>$</c>), so each list puts its element's index and the
/// element's own path in front of what was refused inside it (<see cref="Nest"/>), and the parse puts the path of the
/// outermost member in front of that (<see cref="Absolute"/>): <c>$.vhosts[1].identity.users[0].login</c>.
/// </summary>
internal static class JsonPaths
{
    /// <summary>The refusal of element <paramref name="index"/> of a list, its path relative to the list.</summary>
    public static JsonException Nest(JsonException inner, int index)
    {
        var (relative, reason) = inner is NestedJsonException nested ? (nested.Relative, nested.Reason) : (string.Empty, Reason(inner));
        return new NestedJsonException($"[{index}]{Own(inner)}{relative}", reason, inner);
    }

    /// <summary>The refusal as it leaves a parse: <paramref name="what"/>, the absolute path, the reason.</summary>
    public static JsonException Absolute(JsonException e, string what)
    {
        var (relative, reason) = e is NestedJsonException nested ? (nested.Relative, nested.Reason) : (string.Empty, Reason(e));
        var path = $"${Own(e)}{relative}";
        return new JsonException($"{what}: {path}: {reason}", path, e.LineNumber, e.BytePositionInLine, e);
    }

    /// <summary>The exception's path in its own document without the leading <c>$</c> (<c>.proxy</c>), or nothing.</summary>
    private static string Own(JsonException e) => e.Path is { Length: > 1 } path && path[0] == '$' ? path[1..] : string.Empty;

    /// <summary>What was refused: the serializer's own messages end with " Path: $… | LineNumber: …", said once, in front.</summary>
    private static string Reason(JsonException e)
    {
        var text = e.Message;
        var suffix = text.IndexOf(" Path: $", StringComparison.Ordinal);
        return suffix >= 0 ? text[..suffix] : text;
    }

    /// <summary>
    /// A refusal inside a list element on its way out: the serializer reading the enclosing document sets its
    /// <see cref="JsonException.Path"/> (the list's member), left null here for that.
    /// </summary>
    private sealed class NestedJsonException(string relative, string reason, Exception inner) : JsonException($"{relative}: {reason}", inner)
    {
        public string Relative { get; } = relative;

        public string Reason { get; } = reason;
    }
}
