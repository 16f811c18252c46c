using System.Globalization;
using System.Text;
using Dispatch.Platform.Interop;
using Dispatch.Wire.Interop;

namespace Dispatch.Platform.Cgroups;

/// <summary>
/// The master's groups: one per pool at <c>ROOT/POOL</c> in each hierarchy that carries memory, cpu
/// or pids (ROOT: a group path, absolute or relative to the master's own group; default "dispatch").
/// cgroup v2: the controllers are enabled in <c>cgroup.subtree_control</c> on the way down and the
/// limits written to memory.max, cpu.max, pids.max. v1: one group per hierarchy, limits in
/// memory.limit_in_bytes, cpu.cfs_period_us + cpu.cfs_quota_us, pids.max. Directories and files are
/// the kernel's: owned by root, writable by root only. Not thread-safe: the master serialises calls.
/// </summary>
public sealed class CgroupTree
{
    private readonly CgroupHost _host;
    private readonly string _root;
    private readonly List<string> _created = [];

    /// <param name="root">A group path: absolute ("/dispatch.slice") or relative to this process's own group ("dispatch").</param>
    public CgroupTree(CgroupHost host, string root)
    {
        _host = host;
        _root = root;
    }

    /// <summary>Every distinct hierarchy carrying one of our controllers, with those controllers.</summary>
    public IReadOnlyList<(CgroupHierarchy Hierarchy, CgroupController[] Controllers)> Hierarchies() =>
        [.. Enum.GetValues<CgroupController>().Select(c => (H: _host.For(c), C: c)).Where(x => x.H is not null)
            .GroupBy(x => x.H!).Select(g => (g.Key, g.Select(x => x.C).ToArray()))];

    /// <summary>The group path of ROOT in a hierarchy.</summary>
    public string BaseGroup(CgroupHierarchy h) =>
        _root.StartsWith('/') ? _root.TrimEnd('/') : h.OwnGroup.TrimEnd('/') + "/" + _root.Trim('/');

    /// <summary>The pool's group directory in each hierarchy.</summary>
    public IReadOnlyList<string> Directories(string pool) =>
        [.. Hierarchies().Select(x => PoolDirectory(x.Hierarchy, pool))];

    private string PoolDirectory(CgroupHierarchy h, string pool) =>
        h.DirectoryOf(BaseGroup(h) + "/" + pool) ?? throw new CgroupException($"group {BaseGroup(h)} is not under the {h} mount (its root is {h.MountRoot})");

    /// <summary>
    /// Creates the pool's groups where missing and writes its limits (unset ones as unlimited).
    /// Returns the cgroup.procs files a worker of the pool writes its pid to.
    /// </summary>
    public string[] Apply(string pool, CgroupLimits limits)
    {
        var procs = new List<string>();
        foreach (var (h, controllers) in Hierarchies())
        {
            var baseGroup = BaseGroup(h);
            // Every group from the mount down to ROOT, then the pool's.
            var chain = new List<string>();
            var mountRoot = h.MountRoot.TrimEnd('/');
            for (var g = baseGroup; g.Length > mountRoot.Length; g = g[..g.LastIndexOf('/')])
                chain.Insert(0, g);
            chain.Insert(0, mountRoot.Length == 0 ? "/" : mountRoot);
            foreach (var group in chain)
            {
                var dir = h.DirectoryOf(group) ?? throw new CgroupException($"group {group} is not under the {h} mount (its root is {h.MountRoot})");
                MakeDirectory(dir);
                if (h.IsV2)
                    EnableControllers(h, dir, controllers);
            }

            var poolDir = PoolDirectory(h, pool);
            MakeDirectory(poolDir);
            if (h.Controllers.Contains("cpuset") && !h.IsV2)
            {
                // A v1 cpuset group takes no task until it has CPUs and memory nodes: inherit the parent's.
                foreach (var file in new[] { "cpuset.cpus", "cpuset.mems" })
                    WriteFile(Path.Combine(poolDir, file), File.ReadAllText(Path.Combine(Path.GetDirectoryName(poolDir)!, file)).Trim());
            }

            foreach (var c in controllers)
                WriteLimit(h, poolDir, c, limits);
            procs.Add(Path.Combine(poolDir, "cgroup.procs"));
        }

        return [.. procs];
    }

    private static void WriteLimit(CgroupHierarchy h, string dir, CgroupController c, CgroupLimits limits)
    {
        var inv = CultureInfo.InvariantCulture;
        switch (c, h.IsV2)
        {
            case (CgroupController.Memory, true):
                WriteFile(Path.Combine(dir, "memory.max"), limits.MemoryMax?.ToString(inv) ?? "max");
                break;
            case (CgroupController.Memory, false):
                WriteFile(Path.Combine(dir, "memory.limit_in_bytes"), limits.MemoryMax?.ToString(inv) ?? "-1");
                break;
            case (CgroupController.Cpu, true):
                WriteFile(Path.Combine(dir, "cpu.max"), limits.Cpu?.ToString() ?? $"max {CgroupLimits.DefaultPeriodUs}");
                break;
            case (CgroupController.Cpu, false):
                WriteFile(Path.Combine(dir, "cpu.cfs_period_us"), (limits.Cpu?.PeriodUs ?? CgroupLimits.DefaultPeriodUs).ToString(inv));
                WriteFile(Path.Combine(dir, "cpu.cfs_quota_us"), limits.Cpu?.QuotaUs.ToString(inv) ?? "-1");
                break;
            default:
                WriteFile(Path.Combine(dir, "pids.max"), limits.PidsMax?.ToString(inv) ?? "max");
                break;
        }
    }

    /// <summary>
    /// v2: a group's children get a controller only when it is in the group's cgroup.subtree_control.
    /// A non-root group with processes of its own cannot enable any ("no internal processes"): if that
    /// group is this process's own and holds only this process (a systemd service with Delegate=yes),
    /// this process moves into a leaf of its own ("master") first.
    /// </summary>
    private void EnableControllers(CgroupHierarchy h, string dir, CgroupController[] controllers)
    {
        var control = Path.Combine(dir, "cgroup.subtree_control");
        var enabled = File.ReadAllText(control).Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries);
        var missing = controllers.Select(CgroupHost.NameOf).Where(n => !enabled.Contains(n)).ToList();
        if (missing.Count == 0)
            return;
        var change = string.Join(' ', missing.Select(n => "+" + n));
        try
        {
            WriteFile(control, change);
        }
        catch (CgroupException e) when (e.InnerException is SysCallException { Errno: 16 /* EBUSY */ } && h.DirectoryOf(h.OwnGroup) == dir)
        {
            var procs = File.ReadAllText(Path.Combine(dir, "cgroup.procs")).Split('\n', StringSplitOptions.RemoveEmptyEntries);
            if (procs.Any(p => p != Environment.ProcessId.ToString(CultureInfo.InvariantCulture)))
                throw new CgroupException($"cannot enable {change} in {control}: the group holds other processes than this one (cgroup v2 allows controllers only for groups without processes of their own); set \"cgroup\": {{ \"root\": \"/…\" }} to a group Dispatch may manage, or run it as a service with Delegate=yes", e);
            var leaf = Path.Combine(dir, "master");
            MakeDirectory(leaf);
            WriteFile(Path.Combine(leaf, "cgroup.procs"), Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
            WriteFile(control, change);
        }
    }

    private void MakeDirectory(string dir)
    {
        if (Directory.Exists(dir))
            return;
        try
        {
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
            _created.Add(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CgroupException($"cannot create {dir}: {e.Message}", e);
        }
    }

    /// <summary>Removes the pool's groups; false (with the reason) when one still holds processes.</summary>
    public bool TryRemove(string pool, out string? why)
    {
        why = null;
        foreach (var dir in Directories(pool))
        {
            if (!Directory.Exists(dir))
                continue;
            if (!TryRemoveDirectory(dir, out var reason))
                why = $"{dir}: {reason}";
        }

        return why is null;
    }

    /// <summary>Removes the groups this instance created on the way to the pools' (ROOT), deepest first, when empty.</summary>
    public void RemoveCreatedRoots()
    {
        foreach (var dir in _created.OrderByDescending(d => d.Length))
        {
            if (Directory.Exists(dir) && !Directory.EnumerateDirectories(dir).Any())
                TryRemoveDirectory(dir, out _);
        }
    }

    private static bool TryRemoveDirectory(string dir, out string? why)
    {
        why = null;
        try
        {
            // rmdir on a cgroup directory: its interface files go with it; EBUSY while it holds tasks or groups.
            Directory.Delete(dir);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            why = e.Message;
            return false;
        }
    }

    /// <summary>One write(2) of <paramref name="value"/> to an existing file (cgroup files take one value per write).</summary>
    public static unsafe void WriteFile(string path, string value)
    {
        var fd = Libc.Open(path, Libc.O_WRONLY | Libc.O_TRUNC | Libc.O_CLOEXEC | Libc.O_NOFOLLOW, 0);
        if (fd < 0)
        {
            var errno = Libc.LastError;
            throw new CgroupException($"cannot open {path}: {Libc.Describe(errno)}", new SysCallException("open", errno));
        }

        try
        {
            var bytes = Encoding.ASCII.GetBytes(value);
            fixed (byte* p = bytes)
            {
                var n = Libc.Write(fd, p, (nuint)bytes.Length);
                if (n != bytes.Length)
                {
                    var errno = n < 0 ? Libc.LastError : 0;
                    throw new CgroupException($"cannot write '{value}' to {path}: {(n < 0 ? Libc.Describe(errno) : "short write")}", new SysCallException("write", errno));
                }
            }
        }
        finally
        {
            Libc.Close(fd);
        }
    }
}
