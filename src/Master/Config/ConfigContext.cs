using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>Where errors go while a config is read: each with its JSON path and the file that defined it; and the value readers every section shares.</summary>
internal sealed class ConfigContext(string file, List<ConfigError> errors, Dictionary<string, string>? sources = null)
{
    /// <summary>An error at a JSON path, in the file that defined it (the main file, or an included one).</summary>
    public void Error(string path, string reason) => errors.Add(new ConfigError(FileOf(path), path, reason));

    /// <summary>The file that defined <paramref name="path"/>: an included one for its vhosts and pools, else the main file.</summary>
    public string FileOf(string path)
    {
        if (sources is null)
            return file;
        var parts = path.Split(':', 3);
        return parts.Length >= 2 && sources.TryGetValue($"{parts[0]}:{parts[1]}", out var source) ? source : file;
    }

    public void Unknown(IConfiguration section, string path, string[] known)
    {
        foreach (var child in section.GetChildren())
        {
            if (!known.Contains(child.Key, StringComparer.OrdinalIgnoreCase))
                Error(path.Length == 0 ? child.Key : $"{path}:{child.Key}", $"unknown setting (expected one of: {string.Join(", ", known)})");
        }
    }

    public (uint Uid, uint Gid) Identity(IConfigurationSection section, string path)
    {
        var user = section["user"];
        if (user is null)
        {
            Error($"{path}:user", "required (a user name or a numeric uid)");
            return (0, 0);
        }

        uint uid, primaryGid;
        if (uint.TryParse(user, NumberStyles.None, CultureInfo.InvariantCulture, out uid))
        {
            primaryGid = uid;
        }
        else if (!Users.TryGetUser(user, out uid, out primaryGid))
        {
            Error($"{path}:user", $"no user named '{user}'");
            return (0, 0);
        }

        var group = section["group"];
        if (group is null)
            return (uid, primaryGid);
        return (uid, ResolveGroup(group, $"{path}:group") ?? 0);
    }

    public uint? ResolveGroup(string? group, string path)
    {
        if (group is null)
        {
            Error(path, "empty group");
            return null;
        }

        if (uint.TryParse(group, NumberStyles.None, CultureInfo.InvariantCulture, out var gid))
            return gid;
        if (Users.TryGetGroup(group, out gid))
            return gid;
        Error(path, $"no group named '{group}'");
        return null;
    }

    public TimeSpan Duration(IConfigurationSection s, TimeSpan fallback)
    {
        if (s.Value is null)
            return fallback;
        var v = s.Value.Trim();
        (string num, double scale) = v.EndsWith("ms", StringComparison.Ordinal) ? (v[..^2], 0.001)
            : v.EndsWith('s') ? (v[..^1], 1)
            : v.EndsWith('m') ? (v[..^1], 60)
            : (v, 1);
        if (double.TryParse(num, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && d > 0 && d * scale <= 86400)
            return TimeSpan.FromSeconds(d * scale);
        Error(s.Path, $"'{s.Value}' is not a duration such as 500ms, 10s or 2m");
        return fallback;
    }

    public int Int(IConfigurationSection s, int fallback, int min, int max) =>
        Number(s, fallback, min, max, NumberStyles.Integer, $"an integer in {min}..{max}");

    public uint UInt(IConfigurationSection s, uint fallback) =>
        Number(s, fallback, uint.MinValue, uint.MaxValue, NumberStyles.None, "a non-negative integer");

    public ulong ULong(IConfigurationSection s, ulong fallback) =>
        Number(s, fallback, 1UL, ulong.MaxValue, NumberStyles.None, "a positive integer");

    /// <summary>A number in [min, max], or the fallback when absent; anything else is an error naming what was expected.</summary>
    private T Number<T>(IConfigurationSection s, T fallback, T min, T max, NumberStyles style, string expected)
        where T : System.Numerics.INumber<T>
    {
        if (s.Value is null)
            return fallback;
        if (T.TryParse(s.Value, style, CultureInfo.InvariantCulture, out var v) && v >= min && v <= max)
            return v;
        Error(s.Path, $"'{s.Value}' is not {expected}");
        return fallback;
    }

    public bool Bool(IConfigurationSection s, bool fallback)
    {
        if (s.Value is null)
            return fallback;
        if (bool.TryParse(s.Value, out var v))
            return v;
        Error(s.Path, $"'{s.Value}' is not true or false");
        return fallback;
    }
}
