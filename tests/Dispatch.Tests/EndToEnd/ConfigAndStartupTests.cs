using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>Config validation (Master check), refusal to start unsafely, and a clean stop.</summary>
public sealed class ConfigAndStartupTests
{
    private readonly ITestOutputHelper _output;

    public ConfigAndStartupTests(ITestOutputHelper output) => _output = output;

    private static string BuiltMaster => TestWorld.PublishedMaster;

    public static TheoryData<string, string, string> BrokenConfigs => new()
    {
        { "pool as root", """{"pools":{"a":{"user":"0"}}}""", "pools:a:user: a pool must not run as root (uid 0)" },
        { "uid below minimum", """{"pools":{"a":{"user":"999","group":"10001"}}}""", "pools:a:user: uid 999 is below security:minUid 1000" },
        { "uid of the dispatcher", """{"pools":{"a":{"user":"10000","group":"10001"}}}""", "pools:a:user: uid 10000 is the dispatcher's uid" },
        { "gid 0", """{"pools":{"a":{"user":"10001","group":"0"}}}""", "pools:a:group: a pool must not run with gid 0" },
        { "privileged supplementary group", """{"pools":{"a":{"user":"10001","groups":["27"]}}}""", "pools:a:groups:0: supplementary group 27 is privileged" },
        { "unknown pool", """{"vhosts":{"a.localhost":{"pool":"nope"}}}""", "vhosts:a.localhost:pool: no pool named 'nope'" },
        { "duplicate name", """{"vhosts":{"b.localhost":{"aliases":["A.localhost."]}}}""", "vhosts:b.localhost:aliases:0: 'a.localhost' is already a name of another vhost" },
        { "bad endpoint", """{"listen":[{"endpoint":"127.0.0.1:http"}]}""", "listen:0:endpoint: '127.0.0.1:http' is not an address:port" },
        { "typo", """{"dispatcher":{"headerTimout":"5s"}}""", "dispatcher:headerTimout: unknown setting" },
        { "bad duration", """{"dispatcher":{"headerTimeout":"soon"}}""", "dispatcher:headerTimeout: 'soon' is not a duration" },
        { "missing root", """{"vhosts":{"a.localhost":{"root":"/nonexistent/www"}}}""", "vhosts:a.localhost:root: directory '/nonexistent/www' does not exist" },
        { "dispatcher as root", """{"dispatcher":{"user":"0"}}""", "dispatcher:user: the dispatcher must not run as root" },
        { "cgroup: not a size", """{"pools":{"a":{"cgroup":{"memoryMax":"lots"}}}}""", "pools:a:cgroup:memoryMax: 'lots' is not a size such as 256M" },
        { "cgroup: zero memory", """{"pools":{"a":{"cgroup":{"memoryMax":"0"}}}}""", "pools:a:cgroup:memoryMax: must be more than 0" },
        { "cgroup: tiny memory", """{"pools":{"a":{"cgroup":{"memoryMax":"512K"}}}}""", "pools:a:cgroup:memoryMax: '512K' is below 1M" },
        { "cgroup: negative percentage", """{"pools":{"a":{"cgroup":{"cpuMax":"-50%"}}}}""", "pools:a:cgroup:cpuMax: '-50%' is not a positive percentage" },
        { "cgroup: zero percentage", """{"pools":{"a":{"cgroup":{"cpuMax":"0%"}}}}""", "pools:a:cgroup:cpuMax: '0%' is not a positive percentage" },
        { "cgroup: period out of range", """{"pools":{"a":{"cgroup":{"cpuMax":"50000 10"}}}}""", "pools:a:cgroup:cpuMax: period 10 microseconds is outside 1000..1000000" },
        { "cgroup: zero pids", """{"pools":{"b":{"cgroup":{"pidsMax":0}}}}""", "pools:b:cgroup:pidsMax: 0 tasks: must be at least 1" },
        { "cgroup: negative pids", """{"pools":{"a":{"cgroup":{"pidsMax":-3}}}}""", "pools:a:cgroup:pidsMax: -3 tasks: must be at least 1" },
        { "cgroup: typo", """{"pools":{"a":{"cgroup":{"memMax":"1G"}}}}""", "pools:a:cgroup:memMax: unknown setting" },
        { "cgroup: escaping root", """{"cgroup":{"root":"../elsewhere"}}""", "cgroup:root: '../elsewhere' is not a cgroup path" },
        { "nofile twice", """{"pools":{"a":{"nofile":4096,"limits":{"nofile":8192}}}}""", "pools:a:limits:nofile: nofile is also given at the pool's top level (pools:a:nofile): give it once" },
        { "nofile not a number", """{"pools":{"a":{"nofile":"many"}}}""", "pools:a:nofile: 'many' is not a positive integer" },
        { "tlsHandOff without program", """{"pools":{"a":{"tlsHandOff":true}}}""", "pools:a:tlsHandOff: only a pool with \"program\" declares this" },
        { "tlsHandOff not a bool", """{"pools":{"a":{"tlsHandOff":"yes"}}}""", "pools:a:tlsHandOff: 'yes' is not true or false" },
        { "proxy to the network", """{"vhosts":{"a.localhost":{"proxy":{"/app/":"http://10.0.0.1:80"}}}}""", "vhosts:a.localhost:proxy:/app/: 'http://10.0.0.1:80': '10.0.0.1' is not a loopback address" },
        { "proxy to a host name", """{"vhosts":{"a.localhost":{"proxy":{"/app/":"http://localhost:8080"}}}}""", "vhosts:a.localhost:proxy:/app/: 'http://localhost:8080': 'localhost' is not a loopback address" },
        { "proxy with a path", """{"vhosts":{"a.localhost":{"proxy":{"/app/":"http://127.0.0.1:8080/base"}}}}""", "vhosts:a.localhost:proxy:/app/: 'http://127.0.0.1:8080/base' has something after the port" },
        { "proxy prefix with a space", """{"vhosts":{"a.localhost":{"proxy":{"/a b/":"unix:/srv/a.sock"}}}}""", "vhosts:a.localhost:proxy:/a b/: '/a b/' contains a space" },
        { "proxy mapping typo", """{"vhosts":{"a.localhost":{"proxy":{"/app/":{"upstream":"unix:/srv/a.sock","readTimout":"5s"}}}}}""", "vhosts:a.localhost:proxy:/app/:readTimout: unknown setting (expected one of: upstream, connectTimeout, readTimeout)" },
        { "proxy mapping without upstream", """{"vhosts":{"a.localhost":{"proxy":{"/app/":{"readTimeout":"5s"}}}}}""", "vhosts:a.localhost:proxy:/app/:upstream: the upstream is empty" },
        { "proxy bad timeout", """{"vhosts":{"a.localhost":{"proxy":{"/app/":"unix:/srv/a.sock","readTimeout":"soon"}}}}""", "vhosts:a.localhost:proxy:readTimeout: 'soon' is not a duration" },
        { "proxy bad mapping timeout", """{"vhosts":{"a.localhost":{"proxy":{"/app/":{"upstream":"unix:/srv/a.sock","connectTimeout":"-1s"}}}}}""", "vhosts:a.localhost:proxy:/app/:connectTimeout: '-1s' is not a duration" },
        { "proxy prefix twice", """{"vhosts":{"a.localhost":{"proxy":{"/app":"unix:/srv/a.sock","/app/":"unix:/srv/b.sock"}}}}""", "vhosts:a.localhost:proxy:/app/: '/app/' is mapped twice" },
        // Found by the config fuzzer: an empty certDir reached Path.GetFullPath, whose exception was not a config error.
        // Terminate now asks what passthrough asked: an absolute path.
        { "empty certDir", """{"vhosts":{"a.localhost":{"certDir":""}}}""", "vhosts:a.localhost:certDir: '' is not an absolute path" },
        { "relative certDirs entry", """{"vhosts":{"a.localhost":{"certDirs":["live/a.localhost"]}}}""", "vhosts:a.localhost:certDirs:0: 'live/a.localhost' is not an absolute path" },
        { "NUL in a path", """{"vhosts":{"a.localhost":{"root":"/srv/a\u0000/www"}}}""", "vhosts:a.localhost:root: the value contains a NUL character (\\u0000)" },
        { "NUL in a name", """{"vhosts":{"c\u0000.localhost":{"pool":"a","root":"/srv"}}}""", "vhosts:c\\u0000.localhost: the name contains a NUL character (\\u0000)" },
        { "proxy not an object", """{"vhosts":{"a.localhost":{"proxy":"unix:/srv/a.sock"}}}""", "vhosts:a.localhost:proxy: an object such as" },

        // Passed check; where the children's probe lists then went over 64 paths (70 of them with one tenant), the
        // dispatcher refused its set-up ("list of 73 entries exceeds its 64-entry limit") and run failed. The limit is
        // fixed, what the worst case leaves (not what this config's tenants happen to leave), so that adding a tenant
        // never makes a good config bad.
        {
            "more probe paths than a proof holds",
            "{\"jailProbe\":{\"paths\":[" + string.Join(",", Enumerable.Range(0, 30).Select(i => $"\"/etc/probe{i}\"")) + "]}}",
            "jailProbe:paths: 30 paths: at most 29 (a child proves its jail on at most 64 paths, 35 of them the master's own: the config, /etc/passwd, other tenants' roots, keys, logs and write directories)"
        },

        // Passed check; the dispatcher's set-up (16 paths of 4096 bytes) or the proof echoing it then did not fit the
        // 65536-byte datagram and run failed. Per path the wire's limit; in all a fixed share of what a list holds.
        {
            "a probe path longer than a path",
            "{\"jailProbe\":{\"paths\":[\"/" + new string('p', 4096) + "\"]}}",
            "jailProbe:paths:0: 4097 bytes: a probe path is at most 4096 (PATH_MAX, what a child's set-up carries of one)"
        },
        {
            "more probe path bytes than a proof holds",
            "{\"jailProbe\":{\"paths\":[" + string.Join(",", Enumerable.Range(0, 16).Select(i => $"\"/etc/probe{i:D2}/{new string('p', 4083)}\"")) + "]}}",
            "jailProbe:paths: 65536 bytes in all: at most 16384 (a child's probe list, sent in one 65536-byte datagram, holds 49152 bytes of paths, 32768 of them the master's own)"
        },
    };

    private static JsonObject ValidConfig(string dir) => DispatchInstance.CheckableConfig(dir);

    private static void Merge(JsonObject target, JsonObject patch)
    {
        foreach (var (key, value) in patch.ToList())
        {
            if (value is JsonObject po && target[key] is JsonObject to)
                Merge(to, po);
            else
                target[key] = value?.DeepClone();
        }
    }

    [Theory]
    [MemberData(nameof(BrokenConfigs))]
    public void Check_rejects_a_broken_config_naming_the_json_path_and_reason(string name, string patch, string expected)
    {
        var dir = Directory.CreateTempSubdirectory("dispatch-check-").FullName;
        try
        {
            var config = ValidConfig(dir);
            Merge(config, JsonNode.Parse(patch)!.AsObject());
            var file = Path.Combine(dir, "dispatch.json");
            File.WriteAllText(file, config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
            var r = Tools.Run(BuiltMaster, "check", "--config", file);
            _output.WriteLine($"{name}: exit {r.ExitCode}\n{r.Stderr}{r.Stdout}");
            Assert.NotEqual(0, r.ExitCode);

            // file:line: path: reason, the line that of the setting (ConfigLinesTests), or of the nearest one enclosing it.
            Assert.Matches($"{System.Text.RegularExpressions.Regex.Escape(file)}:[1-9][0-9]*: {System.Text.RegularExpressions.Regex.Escape(expected)}", r.Stderr);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Check_accepts_the_sample_and_reports_invalid_json_with_its_position()
    {
        var dir = Directory.CreateTempSubdirectory("dispatch-check-").FullName;
        try
        {
            var file = Path.Combine(dir, "dispatch.json");
            File.WriteAllText(file, ValidConfig(dir).ToJsonString());
            var ok = Tools.Run(BuiltMaster, "check", "--config", file);
            Assert.True(ok.ExitCode == 0, ok.Stderr);
            Assert.Contains("configuration OK", ok.Stdout, StringComparison.Ordinal);

            File.WriteAllText(file, """{ "listen": [ { "endpoint": "127.0.0.1:80", } """);
            var bad = Tools.Run(BuiltMaster, "check", "--config", file);
            Assert.Equal(1, bad.ExitCode);
            Assert.Contains("not valid JSON", bad.Stderr, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [SkippableFact]
    public void The_master_refuses_to_start_from_a_directory_others_can_write()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("unsafe-app");
        var app = Path.Combine(dir, "app");
        Directory.CreateDirectory(app);
        foreach (var f in Directory.EnumerateFiles(TestWorld.AppDirectory))
            File.Copy(f, Path.Combine(app, Path.GetFileName(f)));
        File.SetUnixFileMode(Path.Combine(app, "Master"), (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(app, (UnixFileMode)0b111_111_111);
        var file = Path.Combine(dir, "dispatch.json");
        File.WriteAllText(file, ValidConfig(dir).ToJsonString());

        var r = Tools.Run(Path.Combine(app, "Master"), "--config", file);
        _output.WriteLine(r.Stdout + r.Stderr);
        Assert.Equal(78, r.ExitCode);
        Assert.Contains($"Refusing to start from {app}: {app} is writable by everyone", r.Stdout, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void The_master_refuses_to_start_without_the_openssl_policy_beside_it()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("no-policy-app");
        var app = Path.Combine(dir, "app");
        Directory.CreateDirectory(app);
        foreach (var f in Directory.EnumerateFiles(TestWorld.AppDirectory).Where(f => !f.EndsWith(".cnf", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(app, Path.GetFileName(f)));
        File.SetUnixFileMode(Path.Combine(app, "Master"), (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(app, (UnixFileMode)0b111_101_101);
        var file = Path.Combine(dir, "dispatch.json");
        File.WriteAllText(file, ValidConfig(dir).ToJsonString());

        var r = Tools.Run(Path.Combine(app, "Master"), "--config", file);
        _output.WriteLine(r.Stdout + r.Stderr);
        Assert.Equal(78, r.ExitCode);
        Assert.Contains($"Refusing to start: {Path.Combine(app, "dispatch-openssl.cnf")} is missing beside the binaries", r.Stdout, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void The_master_refuses_to_run_without_root()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("non-root");
        var file = Path.Combine(dir, "dispatch.json");
        File.WriteAllText(file, ValidConfig(dir).ToJsonString());
        var r = Tools.Run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", Path.Combine(TestWorld.AppDirectory, "Master"), "--config", file);
        Assert.Equal(77, r.ExitCode);
        Assert.Contains("must run as root", r.Stderr, StringComparison.Ordinal);
    }

    /// <summary>
    /// jailProbe.paths at their most bytes (four of 4096, 16384 in all): `check` accepts them, and `run` with them starts
    /// the dispatcher and a worker, each of which proves its jail on them (its set-up carried them and its proof came
    /// back), and serves. What check accepts, run runs.
    /// </summary>
    [SkippableFact]
    public void The_most_probe_path_bytes_check_accepts_run_serves_with()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("probe-bytes");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        var paths = Enumerable.Range(0, 4).Select(i => $"/etc/probe{i}/{new string('p', 4096 - 12)}").ToList();
        Assert.Equal(16384, paths.Sum(p => p.Length));
        config["jailProbe"]!["paths"] = new JsonArray([.. paths.Select(p => (JsonNode)p)]);
        config["jailProbe"]!["threads"] = 4;
        var file = Path.Combine(dir, "check.json");
        File.WriteAllText(file, config.ToJsonString());
        var check = Tools.Run(BuiltMaster, "check", "--config", file);
        Assert.True(check.ExitCode == 0, check.Stderr);

        using var d = DispatchInstance.StartReady(dir, config, _output);
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
    }

    [SkippableFact]
    public void SIGTERM_stops_every_process_and_the_master_exits_0()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("sigterm");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        using var d = DispatchInstance.StartReady(dir, DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b), _output);
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
        var pids = new[] { d.DispatcherPid, d.WorkerPid("a") };

        Assert.Equal(0, Tools.Run("kill", "-TERM", d.MasterPid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
        Assert.Equal(0, d.WaitForExit());
        foreach (var pid in pids)
            Assert.False(Directory.Exists($"/proc/{pid}"), $"process {pid} survived the master");
    }

    [SkippableFact]
    public void Killing_the_master_takes_every_child_down()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("kill-master");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        using var d = DispatchInstance.StartReady(dir, DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b), _output);
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
        var pids = new[] { d.DispatcherPid, d.WorkerPid("a") };

        Assert.Equal(0, Tools.Run("kill", "-KILL", d.MasterPid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
        d.WaitForExit();
        // Orphans are re-parented (to init) and reaped there; each ends on its channel's end-of-file.
        foreach (var pid in pids)
            Assert.True(Tools.Eventually(() => !Directory.Exists($"/proc/{pid}") || File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ", StringComparison.Ordinal)), $"process {pid} survived the master's death");
    }
}
