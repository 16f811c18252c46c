using System.Globalization;
using System.Text;

namespace Dispatch.Platform.Cgroups;

/// <summary>The controllers Dispatch sets limits with.</summary>
public enum CgroupController
{
    Memory,
    Cpu,
    Pids,
}

/// <summary>CPU bandwidth: <paramref name="QuotaUs"/> microseconds of CPU per <paramref name="PeriodUs"/> (cpu.max; v1: cfs_quota_us/cfs_period_us).</summary>
public readonly record struct CpuMax(long QuotaUs, long PeriodUs)
{
    public override string ToString() => $"{QuotaUs} {PeriodUs}";
}

/// <summary>A pool's cgroup limits; null means unlimited ("max").</summary>
public sealed record CgroupLimits(ulong? MemoryMax, CpuMax? Cpu, ulong? PidsMax)
{
    public const long DefaultPeriodUs = 100_000;

    /// <summary>The controllers whose limit is set.</summary>
    public IEnumerable<CgroupController> Requested
    {
        get
        {
            if (MemoryMax is not null)
                yield return CgroupController.Memory;
            if (Cpu is not null)
                yield return CgroupController.Cpu;
            if (PidsMax is not null)
                yield return CgroupController.Pids;
        }
    }

    public override string ToString() =>
        $"memory.max {MemoryMax?.ToString(CultureInfo.InvariantCulture) ?? "max"}, cpu.max {Cpu?.ToString() ?? "max"}, pids.max {PidsMax?.ToString(CultureInfo.InvariantCulture) ?? "max"}";

    /// <summary>"256M", "1G", "1048576", "max" (binary suffixes K, M, G, T). Error: why not.</summary>
    public static (ulong? Value, string? Error) ParseMemory(string text)
    {
        var t = text.Trim();
        if (t == "max")
            return (null, null);
        ulong scale = 1;
        var digits = t;
        if (t.Length > 0 && "KkMmGgTt".Contains(t[^1], StringComparison.Ordinal))
        {
            scale = char.ToUpperInvariant(t[^1]) switch { 'K' => 1UL << 10, 'M' => 1UL << 20, 'G' => 1UL << 30, _ => 1UL << 40 };
            digits = t[..^1];
        }

        if (!ulong.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var n))
            return (null, $"'{text}' is not a size such as 256M, 2G or a number of bytes (or \"max\")");
        if (n == 0)
            return (null, "must be more than 0 (use \"max\" for no limit)");
        if (n > ulong.MaxValue / scale)
            return (null, $"'{text}' is too large");
        var bytes = n * scale;
        if (bytes < 1UL << 20)
            return (null, $"'{text}' is below 1M: no worker could start within it");
        return (bytes, null);
    }

    /// <summary>"50%" (of one CPU, period 100 ms), "150%", "50000 100000" (quota and period in µs), "max".</summary>
    public static (CpuMax? Value, string? Error) ParseCpu(string text)
    {
        var t = text.Trim();
        if (t == "max")
            return (null, null);
        if (t.EndsWith('%'))
        {
            if (!decimal.TryParse(t[..^1], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var percent) || percent <= 0)
                return (null, $"'{text}' is not a positive percentage of one CPU such as 50% or 200%");
            if (percent < 1 || percent > 100_000)
                return (null, $"'{text}' is outside 1%..100000%");
            return (new CpuMax((long)Math.Round(percent / 100m * DefaultPeriodUs), DefaultPeriodUs), null);
        }

        var parts = t.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length != 2
            || !long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var quota)
            || !long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var period))
            return (null, $"'{text}' is neither a percentage such as 50% nor \"QUOTA PERIOD\" in microseconds such as \"50000 100000\" (or \"max\")");
        if (period is < 1000 or > 1_000_000)
            return (null, $"period {parts[1]} microseconds is outside 1000..1000000");
        if (quota < 1000)
            return (null, $"quota {parts[0]} microseconds is below 1000 (the kernel's minimum)");
        return (new CpuMax(quota, period), null);
    }

    /// <summary>A positive number of tasks (processes and threads together), or "max".</summary>
    public static (ulong? Value, string? Error) ParsePids(string text)
    {
        var t = text.Trim();
        if (t == "max")
            return (null, null);
        if (!long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n))
            return (null, $"'{text}' is not a number of tasks (or \"max\")");
        if (n <= 0)
            return (null, $"{n} tasks: must be at least 1 (use \"max\" for no limit)");
        return ((ulong)n, null);
    }
}

/// <summary>One mounted cgroup hierarchy, and where this process sits in it.</summary>
/// <param name="MountPoint">Where it is mounted, e.g. /sys/fs/cgroup or /sys/fs/cgroup/memory.</param>
/// <param name="MountRoot">The group mounted there (a path inside the hierarchy; "/" but in cgroup namespaces).</param>
/// <param name="IsV2">cgroup2 (unified) rather than a v1 hierarchy.</param>
/// <param name="Controllers">v1: the controllers bound to it; v2: those listed in cgroup.controllers at the mount.</param>
/// <param name="OwnGroup">This process's group in the hierarchy (/proc/self/cgroup).</param>
public sealed record CgroupHierarchy(string MountPoint, string MountRoot, bool IsV2, IReadOnlyList<string> Controllers, string OwnGroup)
{
    /// <summary>The directory of a group (a path inside the hierarchy); null when that group is not under what is mounted.</summary>
    public string? DirectoryOf(string group)
    {
        if (!group.StartsWith('/') || group.Split('/').Any(c => c is "." or ".."))
            return null;
        var root = MountRoot.TrimEnd('/');
        if (root.Length > 0 && group != root && !group.StartsWith(root + "/", StringComparison.Ordinal))
            return null;
        var rest = group[root.Length..].TrimStart('/');
        return rest.Length == 0 ? MountPoint : Path.Combine(MountPoint, rest);
    }

    public override string ToString() =>
        $"{(IsV2 ? "cgroup2" : "cgroup v1")} at {MountPoint} ({(Controllers.Count == 0 ? "no controllers" : string.Join(" ", Controllers))})";
}

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
