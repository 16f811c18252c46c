using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>Reads and checks a vhost's <c>fastcgi</c> section and its <c>tryFiles</c> list (see docs/fastcgi.md).</summary>
internal static class FastCgiConfigReader
{
    private static readonly string[] Keys = ["socket", "spawn", "connectTimeout", "readTimeout"];
    private static readonly string[] SpawnKeys = ["program", "maxChildren", "idleTimeout", "phpAdminValues"];

    public static FastCgiConfig? Read(Action<string, string> error, Func<IConfigurationSection, TimeSpan, TimeSpan> duration, IConfigurationSection vhost)
    {
        var section = vhost.GetSection("fastcgi");
        if (!section.Exists())
            return null;
        if (section.Value is not null)
        {
            error(section.Path, "an object such as { \"socket\": \"/run/php/site.sock\" } or { \"spawn\": { \"program\": \"/usr/sbin/php-fpm8.2\" } }");
            return null;
        }

        foreach (var child in section.GetChildren().Where(c => !Keys.Contains(c.Key, StringComparer.OrdinalIgnoreCase)))
            error(child.Path, $"unknown setting (expected one of: {string.Join(", ", Keys)})");

        var socketSection = section.GetSection("socket");
        var spawnSection = section.GetSection("spawn");
        string? socket = null;
        if (socketSection.Exists())
        {
            if (socketSection.Value is not { } text)
                error(socketSection.Path, "a Unix socket path such as /run/php/site.sock");
            else if (CheckSocketPath(text) is { } problem)
                error(socketSection.Path, problem);
            else
                socket = text;
        }

        FastCgiSpawnConfig? spawn = null;
        if (spawnSection.Exists())
            spawn = ReadSpawn(error, duration, spawnSection);
        if (socketSection.Exists() == spawnSection.Exists())
            error(section.Path, "needs exactly one of \"socket\" (an operator-run php-fpm's Unix socket) or \"spawn\" (a php-fpm the worker starts as the tenant)");

        return new FastCgiConfig(
            socket,
            spawn,
            duration(section.GetSection("connectTimeout"), Dispatch.Wire.Payloads.FastCgiRoute.DefaultConnectTimeout),
            duration(section.GetSection("readTimeout"), Dispatch.Wire.Payloads.FastCgiRoute.DefaultReadTimeout));
    }

    /// <summary>
    /// <c>tryFiles</c>: <c>$uri</c> and <c>$uri/</c> in any order, then one fallback: an absolute URL path (a script
    /// such as <c>/index.php</c>, or a static file) or <c>=404</c>.
    /// </summary>
    public static IReadOnlyList<string> ReadTryFiles(Action<string, string> error, IConfigurationSection vhost)
    {
        var section = vhost.GetSection("tryFiles");
        if (!section.Exists())
            return [];
        var items = section.GetChildren().ToList();
        if (section.Value is not null || items.Count == 0)
        {
            error(section.Path, "a list such as [\"$uri\", \"$uri/\", \"/index.php\"]");
            return [];
        }

        var list = new List<string>();
        var ok = true;
        for (var i = 0; i < items.Count; i++)
        {
            var value = items[i].Value ?? string.Empty;
            var last = i == items.Count - 1;
            if (!last && value is not ("$uri" or "$uri/"))
            {
                error(items[i].Path, $"'{value}' is not $uri or $uri/ (only the last entry is a fallback)");
                ok = false;
            }
            else if (last && CheckFallback(value) is { } problem)
            {
                error(items[i].Path, problem);
                ok = false;
            }

            list.Add(value);
        }

        if (ok && list[^1].EndsWith(".php", StringComparison.Ordinal) && !vhost.GetSection("fastcgi").Exists())
        {
            error(items[^1].Path, $"the fallback '{list[^1]}' is a PHP script: the vhost needs a \"fastcgi\" section");
            ok = false;
        }

        return ok ? list : [];
    }

    /// <summary>Null when <paramref name="path"/> is an acceptable socket path, else why not.</summary>
    internal static string? CheckSocketPath(string path)
    {
        if (!Path.IsPathFullyQualified(path) || path.EndsWith('/'))
            return $"'{path}' is not an absolute path to a socket file";
        if (path.Split('/').Any(segment => segment is "." or ".."))
            return $"'{path}' contains '.' or '..' segments";
        if (path.Contains('\0', StringComparison.Ordinal))
            return "the path contains a NUL character";
        if (System.Text.Encoding.UTF8.GetByteCount(path) > 107)
            return $"'{path}' is longer than a Unix socket path may be (107 bytes)";
        return null;
    }

    private static string? CheckFallback(string value)
    {
        if (value == "=404")
            return null;
        if (value.StartsWith("$uri", StringComparison.Ordinal))
            return $"'{value}' cannot be the last entry: the last is the fallback, an absolute URL path such as /index.php or =404";
        if (!value.StartsWith('/') || value.Contains('$', StringComparison.Ordinal) || value.Contains('?', StringComparison.Ordinal)
            || value.Contains('#', StringComparison.Ordinal) || value.Contains("//", StringComparison.Ordinal) || value.EndsWith('/')
            || value.Split('/').Any(segment => segment is "." or "..") || value.Any(c => c <= ' ' || c == 0x7f || c == '\\' || c == '%'))
            return $"'{value}' is not a fallback: an absolute URL path to a file such as /index.php (no variables, query, '.' or '..'), or =404";
        return null;
    }

    private static FastCgiSpawnConfig? ReadSpawn(Action<string, string> error, Func<IConfigurationSection, TimeSpan, TimeSpan> duration, IConfigurationSection spawn)
    {
        if (spawn.Value is not null)
        {
            error(spawn.Path, "an object such as { \"program\": \"/usr/sbin/php-fpm8.2\" }");
            return null;
        }

        foreach (var child in spawn.GetChildren().Where(c => !SpawnKeys.Contains(c.Key, StringComparer.OrdinalIgnoreCase)))
            error(child.Path, $"unknown setting (expected one of: {string.Join(", ", SpawnKeys)})");
        var programSection = spawn.GetSection("program");
        var program = programSection.Value;
        var ok = true;
        if (program is null)
        {
            error(programSection.Path, "required: the php-fpm binary, such as /usr/sbin/php-fpm8.2");
            ok = false;
        }
        else if (!Path.IsPathFullyQualified(program) || program.Split('/').Any(segment => segment is "." or ".."))
        {
            error(programSection.Path, $"'{program}' is not an absolute path without '.' or '..'");
            ok = false;
        }
        else if (!File.Exists(program))
        {
            error(programSection.Path, $"'{program}' does not exist (is php-fpm installed?)");
            ok = false;
        }
        else if ((File.GetUnixFileMode(program) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) == 0)
        {
            error(programSection.Path, $"'{program}' is not executable");
            ok = false;
        }
        else if ((File.GetUnixFileMode(program) & (UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
        {
            error(programSection.Path, $"'{program}' is writable by group or others: anyone could replace what the tenant runs");
            ok = false;
        }

        var childrenSection = spawn.GetSection("maxChildren");
        var maxChildren = 5;
        if (childrenSection.Value is { } text
            && (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out maxChildren) || maxChildren is < 1 or > 256))
        {
            error(childrenSection.Path, $"'{text}' is not an integer in 1..256");
            maxChildren = 5;
            ok = false;
        }

        var idle = duration(spawn.GetSection("idleTimeout"), TimeSpan.FromSeconds(10));
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        var valuesSection = spawn.GetSection("phpAdminValues");
        if (valuesSection.Value is not null)
        {
            error(valuesSection.Path, "an object such as { \"post_max_size\": \"64M\", \"memory_limit\": \"256M\" }");
            ok = false;
        }

        foreach (var v in valuesSection.GetChildren())
        {
            if (v.Key.Length is 0 or > 64 || !v.Key.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '_' or '.'))
            {
                error(v.Path, $"'{v.Key}' is not a PHP directive name (lower-case letters, digits, '_' and '.')");
                ok = false;
            }
            else if (v.Value is null || v.Value.Length > 1024 || v.Value.Any(c => c < ' ' || c == 0x7f || c is '"' or '\\' or ';' or '[' or ']'))
            {
                error(v.Path, "a single-line value without quotes, backslashes, ';', '[' or ']' (at most 1024 characters)");
                ok = false;
            }
            else
            {
                values[v.Key] = v.Value;
            }
        }

        return ok ? new FastCgiSpawnConfig(program!, maxChildren, idle, new Dispatch.Wire.Payloads.ValueDictionary(values)) : null;
    }

}
