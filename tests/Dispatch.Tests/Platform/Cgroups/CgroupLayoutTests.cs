using Dispatch.Platform.Cgroups;

namespace Dispatch.Tests.Platform.Cgroups;

/// <summary>
/// Which hierarchy carries which controller, and which files the master writes, on layouts this
/// machine does not have (pure cgroup v2; namespaced mounts). The v2 layout is written to a
/// directory tree shaped like cgroupfs: it checks names, values and order, not the kernel (the
/// end-to-end CgroupTests do that on the machine's own cgroups).
/// </summary>
public sealed class CgroupLayoutTests
{
    private const string Hybrid = """
        30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
        34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
        39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
        40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        """;

    private const string HybridSelf = """
        9:name=systemd:/
        8:pids:/
        4:memory:/process_api/abc
        1:cpu,cpuacct:/
        0::/
        """;

    [Fact]
    public void Hybrid_layout_takes_each_controller_from_its_v1_mount_when_the_unified_one_has_none()
    {
        var host = CgroupHost.Parse(Hybrid, HybridSelf, _ => "\n");
        var memory = host.For(CgroupController.Memory)!;
        Assert.False(memory.IsV2);
        Assert.Equal("/sys/fs/cgroup/memory", memory.MountPoint);
        Assert.Equal("/process_api/abc", memory.OwnGroup);
        Assert.Equal("/sys/fs/cgroup/cpu,cpuacct", host.For(CgroupController.Cpu)!.MountPoint);
        Assert.Equal("/sys/fs/cgroup/pids", host.For(CgroupController.Pids)!.MountPoint);

        var tree = new CgroupTree(host, "dispatch");
        Assert.Equal(
            ["/sys/fs/cgroup/cpu,cpuacct/dispatch/a", "/sys/fs/cgroup/memory/process_api/abc/dispatch/a", "/sys/fs/cgroup/pids/dispatch/a"],
            tree.Directories("a").Order(StringComparer.Ordinal));
        Assert.Contains("/sys/fs/cgroup/memory/dispatch.slice/a", new CgroupTree(host, "/dispatch.slice").Directories("a"));
    }

    [Fact]
    public void Nothing_mounted_means_no_controller_and_says_so()
    {
        var host = CgroupHost.Parse("30 22 0:27 / /sys rw - sysfs sysfs rw\n", "0::/\n", _ => null);
        Assert.Null(host.For(CgroupController.Pids));
        Assert.Contains("no usable pids controller (no cgroup file system mounted)", host.WhyUnavailable(CgroupController.Pids), StringComparison.Ordinal);
    }

    [Fact]
    public void A_namespaced_mount_maps_only_groups_beneath_its_root()
    {
        var h = new CgroupHierarchy("/sys/fs/cgroup", "/kubepods/pod1", true, ["memory"], "/kubepods/pod1/c");
        Assert.Equal("/sys/fs/cgroup/c/dispatch", h.DirectoryOf("/kubepods/pod1/c/dispatch"));
        Assert.Equal("/sys/fs/cgroup", h.DirectoryOf("/kubepods/pod1"));
        Assert.Null(h.DirectoryOf("/kubepods/pod2/x"));
        Assert.Null(h.DirectoryOf("/kubepods/pod1/../pod2"));
    }

    [Fact]
    public void Pure_v2_enables_the_controllers_on_the_way_down_and_writes_memory_cpu_and_pids_max()
    {
        var mount = Directory.CreateTempSubdirectory("dispatch-cgroup2-").FullName;
        try
        {
            var own = "/system.slice/dispatch.service";
            var pool = Path.Combine(mount, "system.slice", "dispatch.service", "dispatch", "a");
            Directory.CreateDirectory(pool);
            foreach (var dir in new[] { mount, Path.Combine(mount, "system.slice"), Path.Combine(mount, "system.slice", "dispatch.service"), Path.GetDirectoryName(pool)!, pool })
            {
                foreach (var file in new[] { "cgroup.subtree_control", "cgroup.procs", "memory.max", "cpu.max", "pids.max" })
                    File.WriteAllText(Path.Combine(dir, file), string.Empty);
            }

            File.WriteAllText(Path.Combine(mount, "cgroup.subtree_control"), "cpu memory\n");
            var host = CgroupHost.Parse($"29 1 0:26 / {mount} rw - cgroup2 cgroup2 rw,nsdelegate\n", $"0::{own}\n", p => p == Path.Combine(mount, "cgroup.controllers") ? "cpuset cpu io memory pids\n" : null);
            Assert.True(host.For(CgroupController.Memory)!.IsV2);
            var tree = new CgroupTree(host, "dispatch");

            var procs = tree.Apply("a", new CgroupLimits(256UL << 20, new CpuMax(50000, 100000), 64));
            Assert.Equal([Path.Combine(pool, "cgroup.procs")], procs);
            Assert.Equal("268435456", File.ReadAllText(Path.Combine(pool, "memory.max")));
            Assert.Equal("50000 100000", File.ReadAllText(Path.Combine(pool, "cpu.max")));
            Assert.Equal("64", File.ReadAllText(Path.Combine(pool, "pids.max")));
            // The root had cpu and memory already; each level below gets all three.
            Assert.Equal("+pids", File.ReadAllText(Path.Combine(mount, "cgroup.subtree_control")));
            Assert.Equal("+memory +cpu +pids", File.ReadAllText(Path.Combine(mount, "system.slice", "cgroup.subtree_control")));
            Assert.Equal("+memory +cpu +pids", File.ReadAllText(Path.Combine(mount, "system.slice", "dispatch.service", "dispatch", "cgroup.subtree_control")));
            Assert.Equal(string.Empty, File.ReadAllText(Path.Combine(pool, "cgroup.subtree_control")));

            // A reload that drops the limits writes "max" (the group stays for the pool's workers).
            tree.Apply("a", new CgroupLimits(null, null, null));
            Assert.Equal("max", File.ReadAllText(Path.Combine(pool, "memory.max")));
            Assert.Equal("max 100000", File.ReadAllText(Path.Combine(pool, "cpu.max")));
            Assert.Equal("max", File.ReadAllText(Path.Combine(pool, "pids.max")));
        }
        finally
        {
            Directory.Delete(mount, true);
        }
    }

    [Theory]
    [InlineData("256M", 268435456UL)]
    [InlineData("1g", 1073741824UL)]
    [InlineData("2097152", 2097152UL)]
    public void Memory_sizes_are_binary(string text, ulong bytes) => Assert.Equal(bytes, CgroupLimits.ParseMemory(text).Value);

    [Fact]
    public void Cpu_and_pids_values_parse_and_max_means_no_limit()
    {
        Assert.Equal(new CpuMax(150000, 100000), CgroupLimits.ParseCpu("150%").Value);
        Assert.Equal(new CpuMax(2500, 100000), CgroupLimits.ParseCpu("2.5%").Value);
        Assert.Equal(new CpuMax(20000, 50000), CgroupLimits.ParseCpu("20000 50000").Value);
        Assert.Equal((null, null), CgroupLimits.ParseCpu("max"));
        Assert.Equal((null, null), CgroupLimits.ParseMemory("max"));
        Assert.Equal(((ulong?)null, (string?)null), CgroupLimits.ParsePids("max"));
        Assert.NotNull(CgroupLimits.ParseCpu("0.5%").Error);
        Assert.NotNull(CgroupLimits.ParseMemory("99999999999999999999T").Error);
    }
}
