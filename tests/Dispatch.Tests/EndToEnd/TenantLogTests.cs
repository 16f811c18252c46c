using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>Per-vhost access logs opened by the master, written by the worker through its own descriptors only.</summary>
public sealed class TenantLogTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public TenantLogTests(ITestOutputHelper output) => _output = output;

    private static (string Dir, JsonObject Config, string Logs) Setup(string name)
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory(name);
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var logs = Path.Combine(dir, "logs");
        Directory.CreateDirectory(logs);
        File.SetUnixFileMode(logs, (UnixFileMode)0b111_101_101);
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["vhosts"]!["a.localhost"]!["accessLog"] = Path.Combine(logs, "a.access.log");
        config["vhosts"]!["b.localhost"]!["accessLog"] = Path.Combine(logs, "b.access.log");
        return (dir, config, logs);
    }

    [SkippableFact]
    public void Each_vhost_logs_in_combined_format_to_its_own_file_and_logrotate_reopens_them()
    {
        var (dir, config, logs) = Setup("tenant-logs");
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        var url = $"http://127.0.0.1:{_dispatch.HttpPort}";
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", "-H", "Referer: http://ref.example/", "-A", "agent/1.0", $"{url}/%69ndex.html?q=%41").Status);
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"{url}/").Status);
        var aLog = Path.Combine(logs, "a.access.log");
        Assert.True(Tools.Eventually(() => File.Exists(aLog) && File.ReadAllText(aLog).Contains("agent/1.0", StringComparison.Ordinal)));
        var line = File.ReadAllLines(aLog).Single(l => l.Contains("agent/1.0", StringComparison.Ordinal));
        _output.WriteLine(line);
        Assert.Matches(new Regex(@"^127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] ""GET /%69ndex\.html\?q=%41 HTTP/1\.1"" 200 1 ""http://ref\.example/"" ""agent/1\.0"" - - \d+\.\d{3}$"), line);
        Assert.DoesNotContain("b.localhost", File.ReadAllText(aLog), StringComparison.Ordinal);
        Assert.Equal("0 10001 640", Tools.Run("stat", "-c", "%u %g %a", aLog).Stdout.Trim());

        // The worker can open no log: its jail proof tried the other tenant's.
        var worker = _dispatch.WorkerPid("a");
        Assert.Contains($"{Path.Combine(logs, "b.access.log")} [0/32 threads opened", _dispatch.WaitForLine(new Regex($@"Jail of Worker {worker} \(a\) holds: .*")).Value, StringComparison.Ordinal);

        // logrotate: move the file away, SIGUSR1, and the next line goes to a new file.
        File.Move(aLog, aLog + ".1");
        Assert.Equal(0, Tools.Run("kill", "-USR1", _dispatch.MasterPid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
        _dispatch.WaitForLine(new Regex("Access and error logs reopened"));
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", "-A", "after-rotate", $"{url}/").Status);
        Assert.True(Tools.Eventually(() => File.Exists(aLog) && File.ReadAllText(aLog).Contains("after-rotate", StringComparison.Ordinal)));
        Assert.DoesNotContain("after-rotate", File.ReadAllText(aLog + ".1"), StringComparison.Ordinal);
    }

    /// <summary>
    /// <c>accessLogFormat: json</c>: one JSON object per line, read back by a JSON parser with the values the request
    /// had; a User-Agent with quotes, a backslash and a tab stays inside its string; the other vhost's
    /// log stays combined.
    /// </summary>
    [SkippableFact]
    public void A_vhost_with_the_json_format_logs_one_object_per_line_that_a_parser_reads_back()
    {
        var (dir, config, logs) = Setup("tenant-logs-json");
        config["vhosts"]!["a.localhost"]!["accessLogFormat"] = "json";
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        var url = $"http://127.0.0.1:{_dispatch.HttpPort}";
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", "-H", "Referer: http://ref.example/", "-A", "agent \"q\" \\ \t/1.0", $"{url}/%69ndex.html?q=%41").Status);
        Assert.Equal(404, Tools.Curl("-H", "Host: a.localhost", "-A", "second", $"{url}/nope").Status);
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", "-A", "to-b", $"{url}/").Status);
        var aLog = Path.Combine(logs, "a.access.log");
        var bLog = Path.Combine(logs, "b.access.log");
        Assert.True(Tools.Eventually(() => File.Exists(aLog) && File.ReadAllText(aLog).Contains("second", StringComparison.Ordinal)));
        var lines = File.ReadAllLines(aLog);
        foreach (var l in lines)
            _output.WriteLine(l);
        Assert.Equal(2, lines.Length);

        using var first = System.Text.Json.JsonDocument.Parse(lines[0]);
        var e = first.RootElement;
        Assert.Equal("a.localhost", e.GetProperty("vhost").GetString());
        Assert.Equal("127.0.0.1", e.GetProperty("client").GetString());
        Assert.Equal("GET", e.GetProperty("method").GetString());
        Assert.Equal("/%69ndex.html?q=%41", e.GetProperty("target").GetString());
        Assert.Equal("HTTP/1.1", e.GetProperty("protocol").GetString());
        Assert.Equal(200, e.GetProperty("status").GetInt32());
        Assert.Equal(1, e.GetProperty("bytes").GetInt64());
        Assert.Equal("http://ref.example/", e.GetProperty("referer").GetString());
        Assert.Equal("agent \"q\" \\ \t/1.0", e.GetProperty("userAgent").GetString());
        Assert.Equal(System.Text.Json.JsonValueKind.Null, e.GetProperty("tls").ValueKind);
        Assert.Equal(System.Text.Json.JsonValueKind.Null, e.GetProperty("sni").ValueKind);
        Assert.True(e.GetProperty("requestTime").GetDouble() >= 0);
        Assert.True(DateTimeOffset.TryParse(e.GetProperty("time").GetString(), System.Globalization.CultureInfo.InvariantCulture, out var when));
        Assert.True(Math.Abs((DateTimeOffset.Now - when).TotalMinutes) < 10, $"logged at {when}");

        using var second = System.Text.Json.JsonDocument.Parse(lines[1]);
        Assert.Equal(404, second.RootElement.GetProperty("status").GetInt32());
        Assert.Equal(System.Text.Json.JsonValueKind.Null, second.RootElement.GetProperty("referer").ValueKind);

        Assert.True(Tools.Eventually(() => File.Exists(bLog) && File.ReadAllText(bLog).Contains("to-b", StringComparison.Ordinal)));
        Assert.Matches(new Regex(@"^127\.0\.0\.1 - - \[[^\]]+\] ""GET / HTTP/1\.1"" 200 1 ""-"" ""to-b"" - - \d+\.\d{3}$"), File.ReadAllLines(bLog).Single());
    }

    [SkippableFact]
    public void The_configured_log_level_reaches_the_jailed_children()
    {
        var (dir, config, _) = Setup("log-level");
        config["log"] = new JsonObject { ["level"] = "Warning" };
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        // At Warning the master does not announce workers: find b's among the master's children.
        var worker = 0;
        Assert.True(Tools.Eventually(() =>
        {
            foreach (var d in Directory.GetDirectories("/proc").Where(d => Path.GetFileName(d).All(char.IsAsciiDigit)))
            {
                try
                {
                    var stat = File.ReadAllText(Path.Combine(d, "stat"));
                    var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                    if (stat.Contains("(Worker)", StringComparison.Ordinal) && fields[1] == _dispatch.MasterPid.ToString(System.Globalization.CultureInfo.InvariantCulture)
                        && Tools.Status(Path.Combine(d, "status"))["Uid"].StartsWith("10002", StringComparison.Ordinal))
                    {
                        worker = int.Parse(Path.GetFileName(d), System.Globalization.CultureInfo.InvariantCulture);
                        return true;
                    }
                }
                catch (IOException)
                {
                }
            }

            return false;
        }));
        // The jailed image (after the stage-1 exec) got the level: no Information lines from it.
        Assert.Contains("DISPATCH_LOG_LEVEL=Warning", File.ReadAllText($"/proc/{worker}/environ"), StringComparison.Ordinal);
        Assert.DoesNotContain($"Worker {worker} (b): b.localhost", _dispatch.Log, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_log_path_a_tenant_could_steer_is_refused()
    {
        var (dir, config, logs) = Setup("tenant-logs-unsafe");
        var tenantDir = Path.Combine(dir, "tenant-logs");
        Directory.CreateDirectory(tenantDir);
        TestWorld.Chown(tenantDir, TestWorld.TenantA, recursive: false);
        config["vhosts"]!["a.localhost"]!["accessLog"] = Path.Combine(tenantDir, "a.log");
        File.CreateSymbolicLink(Path.Combine(logs, "b.access.log"), "/etc/shadow");
        var file = Path.Combine(dir, "dispatch.json");
        File.WriteAllText(file, config.ToJsonString());
        var r = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", file);
        _output.WriteLine(r.Stderr);
        Assert.Contains($"vhosts:a.localhost:accessLog: logs must live under a directory only root can write: {tenantDir} is owned by uid 10001, not root", r.Stderr, StringComparison.Ordinal);
        Assert.Contains($"vhosts:b.localhost:accessLog: {Path.Combine(logs, "b.access.log")} is a symbolic link", r.Stderr, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_log_path_naming_a_file_root_depends_on_or_another_pools_log_is_refused()
    {
        var (dir, config, logs) = Setup("tenant-logs-reserved");
        // A second name of a root file (two links), and a file of another group than root's or the pool's.
        var original = Path.Combine(logs, "original");
        File.WriteAllText(original, string.Empty);
        var linked = Path.Combine(logs, "linked.log");
        Assert.Equal(0, Tools.Run("ln", original, linked).ExitCode);
        var foreignGroup = Path.Combine(logs, "foreign-group.log");
        File.WriteAllText(foreignGroup, string.Empty);
        Assert.Equal(0, Tools.Run("chown", $"0:{TestWorld.TenantA}", foreignGroup).ExitCode);
        var file = Path.Combine(dir, "dispatch.json");
        config["vhosts"]!["a.localhost"]!["accessLog"] = linked;
        config["vhosts"]!["b.localhost"]!["accessLog"] = foreignGroup;
        config["vhosts"]!["a.localhost"]!["errorLog"] = file;
        config["log"] = new JsonObject { ["file"] = Path.Combine(logs, "master.log") };
        config["vhosts"]!["b.localhost"]!["errorLog"] = Path.Combine(logs, "master.log");
        File.WriteAllText(file, config.ToJsonString());
        var r = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", file);
        _output.WriteLine(r.Stderr);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains($"vhosts:a.localhost:accessLog: {linked} has 2 hard links: a log file must have only its own name", r.Stderr, StringComparison.Ordinal);
        Assert.Contains($"vhosts:b.localhost:accessLog: {foreignGroup} belongs to group {TestWorld.TenantA}, neither root's nor the pool's ({TestWorld.TenantB})", r.Stderr, StringComparison.Ordinal);
        Assert.Contains($"vhosts:a.localhost:errorLog: {file} is the config file ({file})", r.Stderr, StringComparison.Ordinal);
        Assert.Contains($"vhosts:b.localhost:errorLog: {Path.Combine(logs, "master.log")} is the master's log:file", r.Stderr, StringComparison.Ordinal);

        // A certificate file (by its archive name: the live one is a symlink), and one existing log reached by two
        // paths (a symlinked directory) from two pools.
        var live = TestWorld.InstallSampleCertificates(dir);
        var key = File.ResolveLinkTarget(Path.Combine(live, "a.localhost", "privkey.pem"), returnFinalTarget: true)!.FullName;
        var shared = Path.Combine(logs, "shared.log");
        File.WriteAllText(shared, string.Empty);
        var alias = Path.Combine(dir, "logs-alias");
        File.CreateSymbolicLink(alias, logs);
        config.Remove("log");
        config["listen"]!.AsArray().Add(new JsonObject { ["endpoint"] = $"127.0.0.1:{TestWorld.FreePort()}", ["protocol"] = "tls" });
        config["vhosts"]!["a.localhost"]!["certDir"] = Path.Combine(live, "a.localhost");
        config["vhosts"]!["a.localhost"]!["accessLog"] = key;
        config["vhosts"]!["a.localhost"]!["errorLog"] = shared;
        config["vhosts"]!["b.localhost"]!["accessLog"] = Path.Combine(logs, "b.access.log");
        config["vhosts"]!["b.localhost"]!["errorLog"] = Path.Combine(alias, "shared.log");
        File.WriteAllText(file, config.ToJsonString());
        r = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", file);
        _output.WriteLine(r.Stderr);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains($"vhosts:a.localhost:accessLog: {key} is a file of certificate directory {Path.Combine(live, "a.localhost")}", r.Stderr, StringComparison.Ordinal);
        Assert.Contains($"vhosts:b.localhost:errorLog: {Path.Combine(alias, "shared.log")} is also a log of vhost a.localhost of pool a: a log file belongs to one pool", r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("vhosts:a.localhost:errorLog", r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("vhosts:b.localhost:accessLog", r.Stderr, StringComparison.Ordinal);
    }

    public void Dispose() => _dispatch?.Dispose();
}
