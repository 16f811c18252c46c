using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>The top-level <c>cgroup</c> section (where the pools' groups go) and a pool's <c>cgroup</c> limits.</summary>
internal static class CgroupSection
{
    public static CgroupConfig Read(ConfigContext ctx, IConfiguration root)
    {
        var cgroupSection = root.GetSection("cgroup");
        ctx.Unknown(cgroupSection, "cgroup", ["root", "required"]);
        var cgroup = new CgroupConfig(cgroupSection["root"] ?? "dispatch", ctx.Bool(cgroupSection.GetSection("required"), false));
        if (!IsCgroupPath(cgroup.Root))
            ctx.Error("cgroup:root", $"'{cgroup.Root}' is not a cgroup path: '/'-separated names of letters, digits, '-', '_', '.' and '@' (absolute, or relative to the master's own group), no '.' or '..'");
        return cgroup;
    }


    /// <summary>The "cgroup" setting of a pool: memoryMax, cpuMax, pidsMax (absent: no group).</summary>
    public static Dispatch.Platform.Cgroups.CgroupLimits? ReadLimits(ConfigContext ctx, IConfigurationSection pool)
    {
        var section = pool.GetSection("cgroup");
        if (!section.Exists())
            return null;
        ctx.Unknown(section, section.Path, ["memoryMax", "cpuMax", "pidsMax"]);
        if (section.Value is not null)
        {
            ctx.Error(section.Path, "an object such as { \"memoryMax\": \"256M\", \"cpuMax\": \"50%\", \"pidsMax\": 64 }");
            return null;
        }

        T? Read<T>(string key, Func<string, (T? Value, string? Error)> parse)
        {
            var s = section.GetSection(key);
            if (s.Value is null)
            {
                if (s.GetChildren().Any())
                    ctx.Error(s.Path, "a single value, not an object or array");
                return default;
            }

            var (value, error) = parse(s.Value);
            if (error is not null)
                ctx.Error(s.Path, error);
            return value;
        }

        var limits = new Dispatch.Platform.Cgroups.CgroupLimits(
            Read<ulong?>("memoryMax", Dispatch.Platform.Cgroups.CgroupLimits.ParseMemory),
            Read<Dispatch.Platform.Cgroups.CpuMax?>("cpuMax", Dispatch.Platform.Cgroups.CgroupLimits.ParseCpu),
            Read<ulong?>("pidsMax", Dispatch.Platform.Cgroups.CgroupLimits.ParsePids));
        if (!IsCgroupName(pool.Key))
            ctx.Error(section.Path, $"pool '{pool.Key}' cannot name a cgroup: its name is that of a cgroup interface file (or '.'/'..')");
        return limits;
    }

    private static readonly string[] CgroupFilePrefixes = ["cgroup", "memory", "cpu", "cpuacct", "cpuset", "pids", "io", "blkio", "devices", "freezer", "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc"];

    /// <summary>A pool's group directory sits next to the parent group's interface files: no name of one.</summary>
    public static bool IsCgroupName(string name) =>
        name is not ("." or ".." or "tasks" or "notify_on_release" or "release_agent")
        && !(name.Contains('.', StringComparison.Ordinal) && CgroupFilePrefixes.Contains(name[..name.IndexOf('.', StringComparison.Ordinal)]));

    private static bool IsCgroupPath(string path)
    {
        var parts = path.Split('/');
        var names = path.StartsWith('/') ? parts[1..] : parts;
        if (path == "/")
            return true;
        return path.Length <= 1024 && names.Length > 0 && names.All(n => n.Length > 0 && IsCgroupName(n) && n.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '@'));
    }
}
