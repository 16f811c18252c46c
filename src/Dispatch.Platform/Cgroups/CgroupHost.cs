using System.Globalization;
using System.Text;

namespace Dispatch.Platform.Cgroups;

/// <summary>
/// The cgroup hierarchies of this machine as this process sees them (/proc/self/mountinfo,
/// /proc/self/cgroup): a controller is taken from cgroup v2 when the unified hierarchy lists it,
/// otherwise from the v1 hierarchy it is mounted with (hybrid layouts have both).
/// </summary>
public sealed class CgroupHost
{
    private static readonly string[] Names = ["memory", "cpu", "pids"];

    private CgroupHost(IReadOnlyList<CgroupHierarchy> hierarchies) => Hierarchies = hierarchies;

    public IReadOnlyList<CgroupHierarchy> Hierarchies { get; }

    public static string NameOf(CgroupController c) => Names[(int)c];

    /// <summary>Reads this process's view; any failure to read means no cgroups.</summary>
    public static CgroupHost Detect()
    {
        try
        {
            return Parse(File.ReadAllText("/proc/self/mountinfo"), File.ReadAllText("/proc/self/cgroup"), ReadOrNull);
        }
        catch (IOException)
        {
            return new CgroupHost([]);
        }
        catch (UnauthorizedAccessException)
        {
            return new CgroupHost([]);
        }
    }

    private static string? ReadOrNull(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Parses mountinfo and /proc/self/cgroup; <paramref name="readFile"/> reads a v2 mount's cgroup.controllers.</summary>
    public static CgroupHost Parse(string mountInfo, string selfCgroup, Func<string, string?> readFile)
    {
        var own = new List<(string[] Controllers, string Path)>();
        foreach (var line in selfCgroup.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = line.Split(':', 3);
            if (parts.Length == 3)
                own.Add((parts[1].Length == 0 ? [] : parts[1].Split(','), parts[2].Trim()));
        }

        var list = new List<CgroupHierarchy>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in mountInfo.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var f = line.Split(' ');
            var dash = Array.IndexOf(f, "-");
            if (dash < 6 || f.Length < dash + 4)
                continue;
            var type = f[dash + 1];
            if (type is not ("cgroup" or "cgroup2") || !seen.Add(f[2]))
                continue;
            var mountRoot = Unescape(f[3]);
            var mountPoint = Unescape(f[4]);
            if (type == "cgroup2")
            {
                var path = own.FirstOrDefault(o => o.Controllers.Length == 0).Path;
                var controllers = (readFile(Path.Combine(mountPoint, "cgroup.controllers")) ?? string.Empty).Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
                if (path is not null)
                    list.Add(new CgroupHierarchy(mountPoint, mountRoot, true, controllers, path));
            }
            else
            {
                var controllers = f[dash + 3].Split(',').Where(o => o is not ("rw" or "ro")).ToArray();
                var path = own.FirstOrDefault(o => o.Controllers.Length > 0 && o.Controllers.Any(controllers.Contains)).Path;
                if (path is not null)
                    list.Add(new CgroupHierarchy(mountPoint, mountRoot, false, controllers, path));
            }
        }

        return new CgroupHost(list);
    }

    /// <summary>mountinfo escapes space, tab, newline and backslash as \ooo.</summary>
    private static string Unescape(string s)
    {
        if (!s.Contains('\\', StringComparison.Ordinal))
            return s;
        var b = new StringBuilder();
        for (var i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && i + 3 < s.Length && int.TryParse(s.AsSpan(i + 1, 3), NumberStyles.None, CultureInfo.InvariantCulture, out var octal))
            {
                b.Append((char)Convert.ToInt32(octal.ToString(CultureInfo.InvariantCulture), 8));
                i += 3;
            }
            else
            {
                b.Append(s[i]);
            }
        }

        return b.ToString();
    }

    /// <summary>The hierarchy that carries <paramref name="controller"/>: cgroup v2 when it lists it, else its v1 mount; null when neither.</summary>
    public CgroupHierarchy? For(CgroupController controller)
    {
        var name = NameOf(controller);
        return Hierarchies.FirstOrDefault(h => h.IsV2 && h.Controllers.Contains(name))
            ?? Hierarchies.FirstOrDefault(h => !h.IsV2 && h.Controllers.Contains(name));
    }

    /// <summary>Why a controller cannot be used here (for warnings and errors).</summary>
    public string WhyUnavailable(CgroupController controller) =>
        $"this machine has no usable {NameOf(controller)} controller ({(Hierarchies.Count == 0 ? "no cgroup file system mounted" : string.Join("; ", Hierarchies))})";

    public override string ToString() => Hierarchies.Count == 0 ? "no cgroup file system" : string.Join("; ", Hierarchies);
}
