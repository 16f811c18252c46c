using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Dispatch.Platform.Cgroups;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// Per-pool cgroups, for real: the master creates and limits the pool's group, the worker joins it in
/// stage 1 (before the drop and the jailed exec), the limits bite, the tenant cannot raise them, and
/// the groups are gone after the master stops.
/// </summary>
public sealed class CgroupTests : IDisposable
{
    private const int Attempts = 200;

    // Forks until the kernel refuses (children wait, then are killed), then tries to raise its own limit.
    private const string ForkScript = """
        #!/usr/bin/python3
        import os, signal, sys
        kids, refused = [], "none"
        for i in range(200):
            try:
                pid = os.fork()
            except OSError as e:
                refused = e.strerror
                break
            if pid == 0:
                signal.pause()
                os._exit(0)
            kids.append(pid)
        for k in kids:
            os.kill(k, signal.SIGKILL)
        for k in kids:
            os.waitpid(k, 0)
        write = "none"
        target = os.environ.get("QUERY_STRING", "")
        if target:
            try:
                with open(target, "w") as f:
                    f.write("max")
                write = "WRITTEN"
            except OSError as e:
                write = "denied(" + e.strerror + ")"
        sys.stdout.write("Content-Type: text/plain\r\n\r\n")
        print("forked=%d refused=%s write=%s" % (len(kids), refused, write))
        """;

    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public CgroupTests(ITestOutputHelper output) => _output = output;

    private static CgroupHost RequireControllers()
    {
        TestWorld.RequireRoot();
        var host = CgroupHost.Detect();
        var missing = Enum.GetValues<CgroupController>().Where(c => host.For(c) is null).Select(CgroupHost.NameOf).ToList();
        Skip.If(missing.Count > 0, $"CGROUP TEST SKIPPED: this machine offers no {string.Join(", ", missing)} controller (neither cgroup v2 nor v1): {host}");
        Skip.If(Enum.GetValues<CgroupController>().Any(c => host.For(c)!.MountRoot != "/"), $"CGROUP TEST SKIPPED: a cgroup hierarchy is mounted from a sub-group (cgroup namespace): {host}");
        return host;
    }

    [SkippableFact]
    public void The_worker_runs_in_its_pools_root_owned_limited_group_pids_max_bites_and_the_groups_go_with_the_master()
    {
        var host = RequireControllers();
        var dir = TestWorld.NewTestDirectory("cgroup");
        var rootA = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var rootB = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var cgiA = TestWorld.NewTenantTree(dir, "cgi-a", TestWorld.TenantA, new Dictionary<string, string> { ["fork.py"] = ForkScript });
        var cgiB = TestWorld.NewTenantTree(dir, "cgi-b", TestWorld.TenantB, new Dictionary<string, string> { ["fork.py"] = ForkScript });
        File.SetUnixFileMode(Path.Combine(cgiA, "fork.py"), UnixFileMode.UserRead | UnixFileMode.UserExecute);
        File.SetUnixFileMode(Path.Combine(cgiB, "fork.py"), UnixFileMode.UserRead | UnixFileMode.UserExecute);

        // A root of its own under this process's group (relative), so parallel runs do not share groups.
        var cgroupRoot = $"dispatch-test-{Guid.NewGuid():N}"[..26];
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), rootA, rootB);
        config["cgroup"] = new JsonObject { ["root"] = cgroupRoot, ["required"] = true };
        config["pools"]!["a"]!["maxWorkers"] = 1;
        config["pools"]!["a"]!["cgroup"] = new JsonObject { ["memoryMax"] = "256M", ["cpuMax"] = "50%", ["pidsMax"] = 64 };
        config["vhosts"]!["a.localhost"]!["cgi"] = new JsonObject { ["/cgi-bin/"] = cgiA };
        config["vhosts"]!["b.localhost"]!["cgi"] = new JsonObject { ["/cgi-bin/"] = cgiB };
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        var d = _dispatch;
        d.WaitForLine(new Regex(@"Pool a: cgroup .* with memory\.max 268435456, cpu\.max 50000 100000, pids\.max 64"));

        Assert.Equal("A", Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Body);
        var worker = d.WorkerPid("a");

        // The worker's /proc/PID/cgroup names the pool's group in every hierarchy; the master's own does not.
        var workerGroups = File.ReadAllLines($"/proc/{worker}/cgroup");
        var ownGroups = File.ReadAllLines("/proc/self/cgroup");
        var dirs = new Dictionary<CgroupController, string>();
        foreach (var c in Enum.GetValues<CgroupController>())
        {
            var h = host.For(c)!;
            string GroupOf(string[] lines) => lines.Select(l => l.Split(':', 3))
                .First(f => h.IsV2 ? f[1].Length == 0 : f[1].Split(',').Contains(CgroupHost.NameOf(c)))[2];
            var expected = GroupOf(ownGroups).TrimEnd('/') + "/" + cgroupRoot + "/a";
            Assert.Equal(expected, GroupOf(workerGroups));
            Assert.NotEqual(expected, GroupOf(File.ReadAllLines($"/proc/{d.MasterPid}/cgroup")));
            dirs[c] = h.MountPoint + expected;
        }

        string Read(CgroupController c, string file) => File.ReadAllText(Path.Combine(dirs[c], file)).Trim();
        var memory = host.For(CgroupController.Memory)!;
        Assert.Equal("268435456", Read(CgroupController.Memory, memory.IsV2 ? "memory.max" : "memory.limit_in_bytes"));
        if (host.For(CgroupController.Cpu)!.IsV2)
        {
            Assert.Equal("50000 100000", Read(CgroupController.Cpu, "cpu.max"));
        }
        else
        {
            Assert.Equal("50000", Read(CgroupController.Cpu, "cpu.cfs_quota_us"));
            Assert.Equal("100000", Read(CgroupController.Cpu, "cpu.cfs_period_us"));
        }

        Assert.Equal("64", Read(CgroupController.Pids, "pids.max"));

        // Root-owned, writable by root only: the group and every file the tenant could use to escape or raise it.
        foreach (var (c, group) in dirs)
        {
            foreach (var path in new[] { group, Path.Combine(group, "cgroup.procs"), Path.Combine(group, "pids.max"), Path.Combine(Path.GetDirectoryName(group)!, "cgroup.procs") }.Where(p => c == CgroupController.Pids || !p.EndsWith("pids.max", StringComparison.Ordinal)))
            {
                var stat = Tools.Run("stat", "-c", "%u %a", path).Stdout.Trim().Split(' ');
                Assert.True(stat[0] == "0", $"{path} is owned by uid {stat[0]}");
                Assert.True((Convert.ToInt32(stat[1], 8) & 0b000_010_010) == 0, $"{path} has mode {stat[1]}");
            }
        }

        // pids.max bites: the tenant's CGI cannot fork past the pool's 64 tasks (the worker's threads count too),
        // and cannot raise the limit; the same script in pool b (no cgroup) forks all it asks for.
        var pidsMax = Path.Combine(dirs[CgroupController.Pids], "pids.max");
        var limited = Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/cgi-bin/fork.py?{pidsMax}");
        _output.WriteLine($"pool a: {limited.Body.Trim()}");
        Assert.Equal(200, limited.Status);
        var m = Regex.Match(limited.Body, @"forked=(?<n>\d+) refused=(?<why>.+) write=(?<write>.+)");
        Assert.True(m.Success, limited.Body);
        var forked = int.Parse(m.Groups["n"].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(forked, 1, 63);
        Assert.Equal("Resource temporarily unavailable", m.Groups["why"].Value.Trim());
        Assert.StartsWith("denied(", m.Groups["write"].Value, StringComparison.Ordinal);
        Assert.Equal("64", Read(CgroupController.Pids, "pids.max"));
        var events = Read(CgroupController.Pids, "pids.events");
        Assert.Matches(new Regex(@"^max [1-9]\d*$", RegexOptions.Multiline), events);

        var free = Tools.Curl("-H", "Host: b.localhost", $"http://127.0.0.1:{d.HttpPort}/cgi-bin/fork.py");
        _output.WriteLine($"pool b: {free.Body.Trim()}");
        Assert.Equal($"forked={Attempts} refused=none write=none", free.Body.Trim());

        // The worker survived its tenant hitting the limit, and still serves.
        Assert.Equal("A", Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Body);
        Assert.True(Directory.Exists($"/proc/{worker}"));

        d.Dispose();
        foreach (var group in dirs.Values)
        {
            Assert.False(Directory.Exists(group), $"{group} is left after the master stopped");
            Assert.False(Directory.Exists(Path.GetDirectoryName(group)), $"{Path.GetDirectoryName(group)} is left after the master stopped");
        }
    }

    [SkippableFact]
    public void A_reload_changes_the_limits_in_place_and_a_pool_that_loses_its_group_has_it_removed_when_its_worker_leaves()
    {
        var host = RequireControllers();
        var dir = TestWorld.NewTestDirectory("cgroup-reload");
        var rootA = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var rootB = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var cgroupRoot = $"dispatch-test-{Guid.NewGuid():N}"[..26];
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), rootA, rootB);
        config["cgroup"] = new JsonObject { ["root"] = cgroupRoot };
        config["pools"]!["a"]!["cgroup"] = new JsonObject { ["pidsMax"] = 64, ["cpuMax"] = "25%" };
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        var d = _dispatch;
        Assert.Equal("A", Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Body);
        var worker = d.WorkerPid("a");
        var pids = host.For(CgroupController.Pids)!;
        var own = File.ReadAllLines("/proc/self/cgroup").Select(l => l.Split(':', 3)).First(f => pids.IsV2 ? f[1].Length == 0 : f[1].Split(',').Contains("pids"))[2];
        var group = pids.MountPoint + own.TrimEnd('/') + "/" + cgroupRoot + "/a";
        Assert.Equal("64", File.ReadAllText(Path.Combine(group, "pids.max")).Trim());
        Assert.Contains(worker.ToString(System.Globalization.CultureInfo.InvariantCulture), File.ReadAllLines(Path.Combine(group, "cgroup.procs")));

        // New values: written in place; the worker stays (and stays in its group).
        config["pools"]!["a"]!["cgroup"] = new JsonObject { ["pidsMax"] = 100 };
        File.WriteAllText(d.ConfigPath, config.ToJsonString());
        d.WaitForLine(new Regex(@"Configuration reloaded \(file changed\), version 2: .*workers retired for no pool"));
        Assert.Equal("100", File.ReadAllText(Path.Combine(group, "pids.max")).Trim());
        var cpu = host.For(CgroupController.Cpu)!;
        var cpuGroup = cpu.MountPoint + File.ReadAllLines("/proc/self/cgroup").Select(l => l.Split(':', 3)).First(f => cpu.IsV2 ? f[1].Length == 0 : f[1].Split(',').Contains("cpu"))[2].TrimEnd('/') + "/" + cgroupRoot + "/a";
        Assert.Equal(cpu.IsV2 ? "max 100000" : "-1", File.ReadAllText(Path.Combine(cpuGroup, cpu.IsV2 ? "cpu.max" : "cpu.cfs_quota_us")).Trim());
        Assert.Contains(worker.ToString(System.Globalization.CultureInfo.InvariantCulture), File.ReadAllLines(Path.Combine(group, "cgroup.procs")));

        // No cgroup any more: the pool's workers are retired and, once the last has left, its groups go.
        config["pools"]!["a"]!.AsObject().Remove("cgroup");
        File.WriteAllText(d.ConfigPath, config.ToJsonString());
        d.WaitForLine(new Regex(@"Configuration reloaded \(file changed\), version 3: .*workers retired for a"));
        d.WaitForLine(new Regex($@"Worker {worker} of pool a exited"));
        d.WaitForLine(new Regex(@"Cgroup of pool a removed"));
        Assert.False(Directory.Exists(group));
        Assert.False(Directory.Exists(cpuGroup));

        // Its next worker runs outside any pool group.
        Assert.Equal("A", Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Body);
        var next = d.WorkerPid("a", skip: 1);
        Assert.DoesNotContain(cgroupRoot, File.ReadAllText($"/proc/{next}/cgroup"), StringComparison.Ordinal);
    }

    public void Dispose() => _dispatch?.Dispose();
}
