using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>A pool's <c>chroot</c> (the built-in chroot module).</summary>
internal static class ChrootSection
{
    /// their own place). Absent or false: no chroot. Whether the machine allows the mounts (CAP_SYS_ADMIN)
    /// shows only when a worker starts.
    /// </summary>
    public static ChrootConfig? Read(ConfigContext ctx, IConfigurationSection pool)
    {
        // An empty object has neither a value nor children: it is listed among the pool's keys only.
        var section = pool.GetChildren().FirstOrDefault(c => c.Key.Equals("chroot", StringComparison.OrdinalIgnoreCase));
        if (section is null)
            return null;
        if (section.Value is { Length: > 0 } flag)
        {
            if (!bool.TryParse(flag, out var on))
            {
                ctx.Error(section.Path, $"'{flag}' is neither true, false nor an object with tmpSize, extraReadOnly, writable");
                return null;
            }

            return on ? new ChrootConfig(DefaultChrootTmp, [], []) : null;
        }

        ctx.Unknown(section, section.Path, ["tmpSize", "extraReadOnly", "writable"]);
        var tmp = DefaultChrootTmp;
        if (section["tmpSize"] is { } size && !TryParseSize(size, out tmp))
            ctx.Error($"{section.Path}:tmpSize", $"'{size}' is not a size from 64k to 64G such as 512k, 64M or 1G");
        List<string> Paths(string key)
        {
            var list = new List<string>();
            foreach (var c in section.GetSection(key).GetChildren())
            {
                var v = c.Value;
                if (v is null || !System.IO.Path.IsPathRooted(v) || v.Split('/').Any(part => part is "." or ".."))
                    ctx.Error(c.Path, $"'{v}' is not an absolute path without . or .. components");
                else if (System.IO.Path.GetFullPath(v) == "/")
                    ctx.Error(c.Path, "binding / into the chroot would undo it");
                else if (!File.Exists(v) && !Directory.Exists(v))
                    ctx.Error(c.Path, $"'{v}' does not exist");
                else
                    list.Add(System.IO.Path.GetFullPath(v).TrimEnd('/'));
            }

            return list;
        }

        var readOnly = Paths("extraReadOnly");
        var writable = Paths("writable");
        foreach (var both in readOnly.Intersect(writable, StringComparer.Ordinal))
            ctx.Error($"{section.Path}:writable", $"'{both}' is listed both read-only and writable");
        return new ChrootConfig(tmp, readOnly, writable);
    }

    private const ulong DefaultChrootTmp = 16UL << 20;

    private static bool TryParseSize(string text, out ulong bytes)
    {
        bytes = 0;
        var t = text.Trim();
        var shift = t.Length > 0 ? char.ToUpperInvariant(t[^1]) switch { 'K' => 10, 'M' => 20, 'G' => 30, _ => 0 } : 0;
        var digits = shift == 0 ? t : t[..^1];
        if (!ulong.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n > (64UL << 30) >> shift)
            return false;
        bytes = n << shift;
        return bytes is >= 64UL << 10 and <= 64UL << 30;
    }
}
