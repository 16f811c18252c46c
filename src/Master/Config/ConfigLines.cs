using System.Text.Json;

namespace Dispatch.Master.Config;

/// <summary>
/// Where each setting of a JSON config file is: its line, by the setting's path as the config's errors name it
/// (<c>vhosts:a.example:certDirs:0</c>, case-insensitive as the configuration's keys are). An error about a setting
/// the file does not have (a required one) gets the line of the nearest enclosing one that it has (the vhost), so that
/// <c>check</c> says where to look as <c>nginx -t</c> does: <c>/etc/dispatch/dispatch.json:12: vhosts:a.example:pool: ...</c>.
/// </summary>
internal sealed class ConfigLines
{
    private static readonly JsonReaderOptions Options = new() { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true, MaxDepth = 256 };
    private readonly Dictionary<string, int> _lines = new(StringComparer.OrdinalIgnoreCase);

    private ConfigLines()
    {
    }

    /// <summary>The errors with the line of their setting where their file has it (each file read once; a file that cannot be read or parsed gives none).</summary>
    public static List<ConfigError> Annotate(List<ConfigError> errors)
    {
        var files = new Dictionary<string, ConfigLines>(StringComparer.Ordinal);
        for (var i = 0; i < errors.Count; i++)
        {
            var e = errors[i];
            if (e.Line is not null || e.Path.Length == 0)
                continue;
            if (!files.TryGetValue(e.File, out var lines))
                files[e.File] = lines = Read(e.File);
            if (lines.LineOf(e.Path) is { } line)
                errors[i] = e with { Line = line };
        }

        return errors;
    }

    /// <summary>The settings of the JSON file at <paramref name="file"/>; none when it cannot be read or is not JSON, invalid UTF-8 included (its error says so already).</summary>
    public static ConfigLines Read(string file)
    {
        try
        {
            return Parse(File.ReadAllBytes(file));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or ArgumentException or NotSupportedException or InvalidOperationException)
        {
            return new ConfigLines();
        }
    }

    /// <summary>The settings of <paramref name="json"/> (UTF-8, a byte order mark allowed).</summary>
    /// <exception cref="JsonException">It is not JSON.</exception>
    public static ConfigLines Parse(ReadOnlySpan<byte> json)
    {
        if (json.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]))
            json = json[3..];
        var map = new ConfigLines();
        var newlines = new List<int>();
        for (var i = 0; i < json.Length; i++)
        {
            if (json[i] == (byte)'\n')
                newlines.Add(i);
        }

        int LineAt(long offset)
        {
            var found = newlines.BinarySearch((int)offset);
            return 1 + (found >= 0 ? found : ~found);
        }

        // The containers open around the current token: each one's path, and for an array the index of its next element.
        var open = new List<(string Path, bool Array, int Next)>();
        string pending = string.Empty;
        var reader = new Utf8JsonReader(json, Options);
        while (reader.Read())
        {
            if (reader.TokenType == JsonTokenType.PropertyName)
            {
                var parent = open.Count == 0 ? string.Empty : open[^1].Path;
                var name = reader.GetString() ?? string.Empty;
                pending = parent.Length == 0 ? name : $"{parent}:{name}";
                map._lines.TryAdd(pending, LineAt(reader.TokenStartIndex));
                continue;
            }

            if (reader.TokenType is JsonTokenType.EndObject or JsonTokenType.EndArray)
            {
                open.RemoveAt(open.Count - 1);
                continue;
            }

            // A value: in an array it is the next element (its path is its index), in an object the pending property's.
            var path = pending;
            if (open.Count > 0 && open[^1].Array)
            {
                var (arrayPath, _, index) = open[^1];
                open[^1] = (arrayPath, true, index + 1);
                path = $"{arrayPath}:{index}";
                map._lines.TryAdd(path, LineAt(reader.TokenStartIndex));
            }
            else if (open.Count == 0)
            {
                path = string.Empty;
            }

            if (reader.TokenType is JsonTokenType.StartObject or JsonTokenType.StartArray)
                open.Add((path, reader.TokenType == JsonTokenType.StartArray, 0));
        }

        return map;
    }

    /// <summary>The line of <paramref name="path"/>, or of the nearest setting enclosing it that the file has; null: none.</summary>
    public int? LineOf(string path)
    {
        while (path.Length > 0)
        {
            if (_lines.TryGetValue(path, out var line))
                return line;
            var colon = path.LastIndexOf(':');
            path = colon < 0 ? string.Empty : path[..colon];
        }

        return null;
    }
}
