using System.Diagnostics;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// The built-in chroot module: a private mount namespace whose root holds only the runtime, the
/// system, and the pool's own paths; with Landlock and alone. Real master, dispatcher, workers and CGI.
/// </summary>
public sealed class ChrootTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public ChrootTests(ITestOutputHelper output) => _output = output;

    /// <summary>Skips loudly where mount namespaces are not permitted (no CAP_SYS_ADMIN, nested container).</summary>
    private static void RequireMountNamespaces()
    {
        TestWorld.RequireRoot();
        var r = Tools.Run("unshare", "--mount", "true");
        Skip.IfNot(r.ExitCode == 0, $"CHROOT TEST SKIPPED: unshare(CLONE_NEWNS) is not permitted here ({r.Stderr.Trim()}); chroot pools need CAP_SYS_ADMIN.");
    }

    private sealed record World(string Dir, string RootA, string RootB, string Cgi, JsonObject Config);

    private static World Setup(string name)
    {
        RequireMountNamespaces();
        var dir = TestWorld.NewTestDirectory(name);
        var rootA = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A-PAGE" });
        var rootB = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["secret.txt"] = "B-SECRET" });
        var look = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n"
            + "echo \"uid $(id -u)\"\n"
            + "echo \"ns $(readlink /proc/self/ns/mnt)\"\n"
            + "echo '--- ls /'\nls -1a /\n"
            + "echo '--- probes'\n"
            + $"for p in /etc/passwd /etc/shadow /home /root {rootB} {rootB}/secret.txt {Path.Combine(dir, "dispatch.json")}; do cat \"$p\" 2>&1 | head -1; done\n"
            + "touch /tmp/scratch && echo tmp-writable || echo tmp-NOT-writable\n"
            + "head -c 4 /etc/ld.so.cache >/dev/null 2>&1 && echo ldcache-read || echo ldcache-denied\n"
            + "touch /usr/x 2>&1 | head -1\n"
            + "echo '--- mountinfo'\ncat /proc/self/mountinfo\n";
        var cgi = TestWorld.NewTenantTree(dir, "cgi-a", TestWorld.TenantA, new Dictionary<string, string> { ["look.sh"] = look });
        File.SetUnixFileMode(Path.Combine(cgi, "look.sh"), UnixFileMode.UserRead | UnixFileMode.UserExecute);
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), rootA, rootB);
        config["vhosts"]!["a.localhost"]!["cgi"] = new JsonObject { ["/cgi-bin/"] = cgi };
        return new World(dir, rootA, rootB, cgi, config);
    }

    private static HashSet<string> HostMounts() =>
        File.ReadAllLines("/proc/self/mountinfo").ToHashSet(StringComparer.Ordinal);

    private static string Link(string path) => new FileInfo(path).LinkTarget ?? string.Empty;

    [SkippableFact]
    public void A_chroot_pool_serves_files_and_CGI_from_a_private_root_and_leaves_no_mount_behind()
    {
        // Chroot alone (Landlock off), so the CGI script may list / and read its own mountinfo.
        var w = Setup("chroot");
        var extra = Path.Combine(w.Dir, "shared");
        Directory.CreateDirectory(extra);
        File.WriteAllText(Path.Combine(extra, "note.txt"), "SHARED");
        File.SetUnixFileMode(extra, (UnixFileMode)0b111_101_101);
        // Outside the config file's directory (a writable path there is refused).
        var upload = TestWorld.NewTenantTree(TestWorld.NewTestDirectory("chroot-upload"), "upload-a", TestWorld.TenantA, new Dictionary<string, string>());
        var write = Path.Combine(w.Cgi, "write.sh");
        File.WriteAllText(write, $"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho WRITTEN > {upload}/f && cat {upload}/f\n");
        TestWorld.Chown(write, TestWorld.TenantA, recursive: false);
        File.SetUnixFileMode(write, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        w.Config["pools"]!["a"]!["chroot"] = new JsonObject { ["tmpSize"] = "8M", ["extraReadOnly"] = new JsonArray(extra), ["writable"] = new JsonArray(upload) };
        w.Config["pools"]!["a"]!["landlock"] = false;
        var before = HostMounts();
        _dispatch = DispatchInstance.StartReady(w.Dir, w.Config, _output);
        var d = _dispatch;
        var url = $"http://127.0.0.1:{d.HttpPort}/";

        var page = Tools.Curl("-H", "Host: a.localhost", url);
        Assert.Equal(200, page.Status);
        Assert.Equal("A-PAGE", page.Body);
        var worker = d.WorkerPid("a");

        // The worker's proof: /etc/passwd, /home and the other tenant's root are absent, not only denied.
        var proof = d.WaitForLine(new Regex($@"Jail of Worker {worker} \(a\) holds: .*")).Value;
        Assert.Contains("(chroot: absent where required)", proof, StringComparison.Ordinal);
        Assert.Contains("/etc/passwd [absent; 0/32 threads opened", proof, StringComparison.Ordinal);
        Assert.Contains("/home [absent; 0/32 threads opened", proof, StringComparison.Ordinal);
        Assert.Contains($"{w.RootB} [absent; 0/32 threads opened", proof, StringComparison.Ordinal);

        var look = Tools.Curl("-H", "Host: a.localhost", url + "cgi-bin/look.sh");
        _output.WriteLine(look.Body);
        Assert.Equal(200, look.Status);
        var body = look.Body;
        Assert.Contains("uid 10001", body, StringComparison.Ordinal);
        var listing = Section(body, "ls /");
        foreach (var entry in new[] { "usr", "bin", "lib", "etc", "dev", "proc", "tmp", "sys" })
            Assert.Contains(entry, listing);
        foreach (var entry in new[] { "home", "root", "boot", "mnt", "srv", "opt" })
            Assert.DoesNotContain(entry, listing);
        var probes = Section(body, "probes");
        // ENOENT, not EACCES: the files are not there at all.
        foreach (var p in new[] { "/etc/passwd", "/etc/shadow", "/home", "/root", w.RootB, w.RootB + "/secret.txt", Path.Combine(w.Dir, "dispatch.json") })
            Assert.Contains($"cat: {p}: No such file or directory", probes);
        Assert.DoesNotContain("B-SECRET", body, StringComparison.Ordinal);
        Assert.Contains("tmp-writable", probes);
        Assert.Contains("ldcache-read", probes); // bound, and no Landlock rule to deny it
        Assert.Contains(probes, l => l.Contains("/usr/x", StringComparison.Ordinal) && l.Contains("Read-only file system", StringComparison.Ordinal));

        // A writable path is the host's own directory, bound read-write.
        Assert.Equal("WRITTEN\n", Tools.Curl("-H", "Host: a.localhost", url + "cgi-bin/write.sh").Body);
        Assert.Equal("WRITTEN\n", File.ReadAllText(Path.Combine(upload, "f")));

        // The CGI's mountinfo is the private namespace: a read-only tmpfs at /, a fresh proc, the private /tmp.
        var mountinfo = Section(body, "mountinfo");
        Assert.Contains(mountinfo, l => Regex.IsMatch(l, @"^\d+ \d+ \S+ / / ro,.* - tmpfs "));
        Assert.Contains(mountinfo, l => Regex.IsMatch(l, @" /proc rw,nosuid,nodev,noexec,.* - proc proc .*hidepid=(2|invisible)"));
        Assert.Contains(mountinfo, l => Regex.IsMatch(l, @" /tmp rw,nosuid,nodev,.* - tmpfs tmpfs .*size=8192k"));
        Assert.Contains(mountinfo, l => l.Contains($" {w.RootA} ro,nosuid,nodev,", StringComparison.Ordinal));
        Assert.Contains(mountinfo, l => l.Contains($" {extra} ro,nosuid,nodev,", StringComparison.Ordinal));
        Assert.Contains(mountinfo, l => l.Contains($" {upload} rw,nosuid,nodev,", StringComparison.Ordinal));
        Assert.DoesNotContain(mountinfo, l => l.Contains(w.RootB, StringComparison.Ordinal));

        // From the host: another mount namespace (the CGI's too), its root is the new tree, ids and caps dropped.
        var workerNs = Link($"/proc/{worker}/ns/mnt");
        Assert.NotEqual(Link($"/proc/{d.MasterPid}/ns/mnt"), workerNs);
        Assert.NotEqual(Link("/proc/self/ns/mnt"), workerNs);
        Assert.Contains($"ns {workerNs}", body, StringComparison.Ordinal);
        Assert.True(File.Exists("/etc/passwd"));
        Assert.False(File.Exists($"/proc/{worker}/root/etc/passwd"));
        Assert.False(Directory.Exists($"/proc/{worker}/root/home"));
        Assert.False(Directory.Exists($"/proc/{worker}/root{w.RootB}"));
        Assert.True(File.Exists($"/proc/{worker}/root{w.RootA}/index.html"));
        Assert.True(File.Exists($"/proc/{worker}/root{extra}/note.txt"));
        Assert.True(File.Exists($"/proc/{worker}/root{TestWorld.AppDirectory}/Worker"));
        var status = Tools.Status($"/proc/{worker}/status");
        Assert.Equal("10001\t10001\t10001\t10001", status["Uid"]);
        Assert.Equal("0000000000000000", status["CapEff"]);
        Assert.Equal("0000000000000000", status["CapPrm"]);
        Assert.Equal("0000000000000000", status["CapBnd"]);
        Assert.Equal("1", status["NoNewPrivs"]);

        // Pool b has no chroot: the host's namespace.
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", url + "secret.txt").Status);
        Assert.Equal(Link($"/proc/{d.MasterPid}/ns/mnt"), Link($"/proc/{d.WorkerPid("b")}/ns/mnt"));

        // Stopped: every process gone, and nothing it mounted is left in the host's namespace.
        d.Dispose();
        Assert.True(Tools.Eventually(() => !Directory.Exists($"/proc/{worker}")), $"worker {worker} is still there");
        var added = HostMounts().Except(before).ToList();
        Assert.True(added.Count == 0, "mounts left in the host namespace:\n" + string.Join('\n', added));
    }

    [SkippableFact]
    public void A_chroot_pool_with_Landlock_has_both_jails()
    {
        var w = Setup("chroot-landlock");
        w.Config["pools"]!["a"]!["chroot"] = true;
        _dispatch = DispatchInstance.StartReady(w.Dir, w.Config, _output);
        var d = _dispatch;
        var url = $"http://127.0.0.1:{d.HttpPort}/";
        Assert.Equal("A-PAGE", Tools.Curl("-H", "Host: a.localhost", url).Body);
        var worker = d.WorkerPid("a");
        var proof = d.WaitForLine(new Regex($@"Jail of Worker {worker} \(a\) holds: .*")).Value;
        Assert.Contains($"{w.RootB} [absent; 0/32 threads opened", proof, StringComparison.Ordinal);

        var look = Tools.Curl("-H", "Host: a.localhost", url + "cgi-bin/look.sh");
        _output.WriteLine(look.Body);
        Assert.Equal(200, look.Status);
        Assert.Contains("uid 10001", look.Body, StringComparison.Ordinal);
        var probes = Section(look.Body, "probes");
        foreach (var p in new[] { "/etc/passwd", "/home", w.RootB, w.RootB + "/secret.txt" })
            Assert.Contains($"cat: {p}: No such file or directory", probes);
        // Landlock still decides inside the chroot: ld.so.cache is bound but not granted; the private /tmp is.
        Assert.Contains("ldcache-denied", probes);
        Assert.Contains("tmp-writable", probes);
        Assert.Empty(Section(look.Body, "ls /")); // listing / is not granted either

        Assert.NotEqual(Link($"/proc/{d.MasterPid}/ns/mnt"), Link($"/proc/{worker}/ns/mnt"));
        Assert.False(File.Exists($"/proc/{worker}/root/etc/passwd"));
        var status = Tools.Status($"/proc/{worker}/status");
        Assert.Equal("10001\t10001\t10001\t10001", status["Uid"]);
        Assert.Equal("0000000000000000", status["CapEff"]);
    }

    [SkippableFact]
    public void Without_CAP_SYS_ADMIN_a_chroot_pool_refuses_to_start_its_worker_and_says_why()
    {
        var w = Setup("chroot-nocap");
        w.Config["pools"]!["a"]!["chroot"] = new JsonObject(); // an empty object turns it on as well
        w.Config["dispatcher"]!["workerWait"] = "2s";
        w.Config["pools"]!["a"]!["landlock"] = false;
        // Pool b's worker is a spare, started with the master: its request must not depend on how fast a worker
        // starts (seconds on a loaded machine; workerWait is short so that a's failure answers quickly).
        w.Config["pools"]!["b"]!["minSpare"] = 1;
        // As in a container that withholds CAP_SYS_ADMIN: the master (and so stage 1) never has it.
        _dispatch = DispatchInstance.StartReady(w.Dir, w.Config, _output, wrapper: ["setpriv", "--bounding-set", "-sys_admin"]);
        var d = _dispatch;
        d.WaitForLine(new Regex(@"Worker \d+ of pool b joined as a spare"));
        var r = Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/");
        Assert.Equal(503, r.Status);
        d.WaitForLine(new Regex(@"Worker stage 1 \(pid \d+\) failed, exiting before serving: unshare\(CLONE_NEWNS\) for the pool's chroot \(needs CAP_SYS_ADMIN.*Operation not permitted"));
        d.WaitForLine(new Regex(@"Could not start a worker for pool a: "));
        // Pool b (no chroot) is unaffected.
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"http://127.0.0.1:{d.HttpPort}/secret.txt").Status);
    }

    [SkippableFact]
    public void Bad_chroot_settings_are_refused_with_the_pool_and_field()
    {
        var w = Setup("chroot-bad");
        w.Config["pools"]!["a"]!["chroot"] = new JsonObject { ["tmpSize"] = "lots", ["extraReadOnly"] = new JsonArray("relative/path", "/"), ["writable"] = new JsonArray("/does/not/exist"), ["bind"] = "x" };
        w.Config["pools"]!["b"]!["landlock"] = false;
        var file = Path.Combine(w.Dir, "dispatch.json");
        File.WriteAllText(file, w.Config.ToJsonString());
        var r = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", file);
        _output.WriteLine(r.Stdout + r.Stderr);
        Assert.NotEqual(0, r.ExitCode);
        Assert.Contains("pools:a:chroot:tmpSize: 'lots' is not a size", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("pools:a:chroot:extraReadOnly:0: 'relative/path' is not an absolute path", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("pools:a:chroot:extraReadOnly:1: binding / into the chroot would undo it", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("pools:a:chroot:writable:0: '/does/not/exist' does not exist", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("pools:a:chroot:bind: unknown setting", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("pools:b:landlock: Landlock may be turned off only in a pool with \"chroot\"", r.Stderr, StringComparison.Ordinal);
    }

    /// <summary>
    /// Not an assertion on time: prints the cold start (spawn to first response) of one-shot workers
    /// with and without chroot, alternating, from the client's side and from the master's log.
    /// </summary>
    [SkippableFact]
    public void Cold_start_with_and_without_chroot_is_measured()
    {
        var w = Setup("chroot-cost");
        File.WriteAllText(Path.Combine(w.RootB, "index.html"), "B");
        TestWorld.Chown(Path.Combine(w.RootB, "index.html"), TestWorld.TenantB, recursive: false);
        w.Config["pools"]!["a"]!["chroot"] = true;
        w.Config["pools"]!["a"]!["oneShot"] = true;
        w.Config["pools"]!["b"]!["oneShot"] = true;
        w.Config["log"] = new JsonObject { ["level"] = "Debug" }; // stage 1's own "chroot: ... in X ms"
        _dispatch = DispatchInstance.StartReady(w.Dir, w.Config, _output);
        var d = _dispatch;
        var url = $"http://127.0.0.1:{d.HttpPort}/";
        var client = new Dictionary<string, List<double>> { ["a"] = [], ["b"] = [] };
        const int Rounds = 5;
        for (var i = 0; i < Rounds; i++)
        {
            foreach (var pool in new[] { "a", "b" })
            {
                var clock = Stopwatch.StartNew();
                Assert.Equal(200, Tools.Curl("-H", $"Host: {pool}.localhost", url).Status);
                client[pool].Add(clock.Elapsed.TotalMilliseconds);
                d.WaitForLine(new Regex($@"Worker \d+ for pool {pool} ready "), i);
                d.WaitForLine(new Regex($@"Worker \d+ of pool {pool} exited"), i);
            }
        }

        double Median(IEnumerable<double> v) => v.OrderBy(x => x).ElementAt(Rounds / 2);
        List<double> Master(string pool) =>
            [.. Regex.Matches(d.Log, $@"Worker \d+ for pool {pool} ready \(uid \d+, gid \d+\) in (?<ms>\d+) ms").Select(m => double.Parse(m.Groups["ms"].Value, System.Globalization.CultureInfo.InvariantCulture))];
        _output.WriteLine($"COLD START (one-shot workers, {Rounds} each, informational):");
        _output.WriteLine($"  chroot + Landlock: client median {Median(client["a"]):F0} ms [{string.Join(", ", client["a"].Select(x => x.ToString("F0", System.Globalization.CultureInfo.InvariantCulture)))}]; master spawn-to-ready median {Median(Master("a")):F0} ms");
        var build = Regex.Matches(d.Log, @"chroot: \d+ binds, pivoted into the new root in (?<ms>[\d.]+) ms").Select(m => double.Parse(m.Groups["ms"].Value, System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(Rounds, build.Count);
        _output.WriteLine($"  of which stage 1 building the chroot: median {Median(build):F1} ms [{string.Join(", ", build.Select(x => x.ToString("F1", System.Globalization.CultureInfo.InvariantCulture)))}]; load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
        _output.WriteLine($"  Landlock only:     client median {Median(client["b"]):F0} ms [{string.Join(", ", client["b"].Select(x => x.ToString("F0", System.Globalization.CultureInfo.InvariantCulture)))}]; master spawn-to-ready median {Median(Master("b")):F0} ms");
    }

    /// <summary>The lines after "--- NAME" up to the next "--- " marker.</summary>
    private static List<string> Section(string body, string name) =>
        [.. body.Split('\n').SkipWhile(l => l != "--- " + name).Skip(1).TakeWhile(l => !l.StartsWith("--- ", StringComparison.Ordinal)).Select(l => l.TrimEnd('\r'))];

    public void Dispose() => _dispatch?.Dispose();
}
