using System.Text.Json;

namespace Dispatch.Wire.Payloads;

/// <summary>
/// Where in a payload a refusal was, as one JSON path in its message. The serializer knows the path of the member it
/// was reading, but a <see cref="ValueListJsonConverter{T}"/> reads each element as a document of its own (whose paths
/// start again at <c>$</c>) and a converter's own refusal carries no path at all; so each list puts its element's index
/// in front of what the element's reader said (<see cref="Nest"/>), and the parse puts the member's path in front of
/// that (<see cref="Absolute"/>): <c>$.vhosts[1].identity.users[0].login: …</c>.
/// </summary>
internal static class JsonPaths
{
    /// <summary>The refusal of element <paramref name="index"/> of a list, with its path relative to the list.</summary>
    public static JsonException Nest(JsonException inner, int index) =>
        new(Join($"[{index}]", inner), null, inner.LineNumber, inner.BytePositionInLine, inner);

    /// <summary>The refusal as it leaves a parse: <paramref name="what"/>, the absolute path, the reason.</summary>
    public static JsonException Absolute(JsonException e, string what) =>
        new($"{what}: {Join("$", e)}", e.Path, e.LineNumber, e.BytePositionInLine, e);

    /// <summary><paramref name="prefix"/> + the exception's own path (relative to its document) + what it says.</summary>
    private static string Join(string prefix, JsonException e)
    {
        var own = e.Path is { Length: > 1 } path && path[0] == '$' ? path[1..] : string.Empty;
        var text = e.Message;
        // The serializer's own messages end with " Path: $… | LineNumber: … | BytePositionInLine: …": said once, in front.
        var suffix = text.IndexOf(" Path: $", StringComparison.Ordinal);
        if (suffix >= 0)
            text = text[..suffix];
        // A message that starts with a relative path ("[0].login: …") already is a nested one: its path continues ours.
        return text.Length > 0 && text[0] is '[' or '.' ? $"{prefix}{own}{text}" : $"{prefix}{own}: {text}";
    }
}
