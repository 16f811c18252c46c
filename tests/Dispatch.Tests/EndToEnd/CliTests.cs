using System.Diagnostics;
using System.Reflection;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// The command line (src/Master/Cli.cs), run as the real built executable: the verbs, <c>--help</c>
/// on stdout with exit 0, <c>--version</c>, <c>-c</c> and its default (<c>DISPATCH_CONFIG</c>, as the
/// installed <c>dispatch</c> wrapper sets it), usage errors on stderr with exit 64, the form without a
/// verb that the systemd unit uses, and <c>reopen</c> against a running master.
/// </summary>
public sealed class CliTests : IDisposable
{
    private static readonly string[] Verbs = ["run", "check", "status", "reload", "upgrade", "reopen"];
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public CliTests(ITestOutputHelper output) => _output = output;

    public static TheoryData<string> VerbData => [.. Verbs];

    /// <summary>Command lines, split at spaces (the empty one: no argument at all).</summary>
    public static TheoryData<string> UsageErrors =>
    [
        "",
        "frobnicate",
        "check --frobnicate",
        "check --config",
        "status --socket",
        "reload --json",
        "check a.json b.json",
    ];

    private static string BuiltMaster => TestWorld.PublishedMaster;

    [Fact]
    public void Help_goes_to_stdout_with_exit_0_and_lists_every_verb_and_the_exit_codes()
    {
        foreach (var help in new[] { "--help", "-h" })
        {
            var r = Master(null, help);
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.Equal(string.Empty, r.Stderr);
            foreach (var verb in Verbs)
                Assert.Matches(new Regex($@"(?m)^\s+{verb}\s+\S"), r.Stdout);
            Assert.Contains("/etc/dispatch/dispatch.json", r.Stdout, StringComparison.Ordinal);
            foreach (var code in new[] { "64", "77", "78" })
                Assert.Matches(new Regex($@"(?m)^\s+{code}\s+\S"), r.Stdout);
        }
    }

    [Theory]
    [MemberData(nameof(VerbData))]
    public void Each_verb_has_its_help_on_stdout(string verb)
    {
        var r = Master(null, verb, "--help");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains($"Master {verb} [options]", r.Stdout, StringComparison.Ordinal);
        if (verb != "run" && verb != "check")
            Assert.Contains("--socket", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("-c, --config", r.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Version_prints_the_assembly_version()
    {
        var r = Master(null, "--version");
        Assert.True(r.ExitCode == 0, r.Stderr);
        // A native executable carries no version resource: the same version as every project of this build
        // (Directory.Build.props), as the informational version (a "+commit" suffix when built from git).
        var ours = typeof(Dispatch.Wire.IpcChannel).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion.Split('+')[0];
        Assert.Matches(@"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9a-f]+)?$", r.Stdout.Trim());
        Assert.Equal(ours, r.Stdout.Trim().Split('+')[0]);
    }

    [Theory]
    [MemberData(nameof(UsageErrors))]
    public void A_usage_error_exits_64_with_the_usage_on_stderr_and_nothing_on_stdout(string commandLine)
    {
        var r = Master(null, commandLine.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal(64, r.ExitCode);
        Assert.Equal(string.Empty, r.Stdout);
        Assert.Contains("Usage:", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void The_wrapper_name_appears_in_the_usage()
    {
        var r = Master(new Dictionary<string, string> { ["DISPATCH_PROGRAM"] = "dispatch" }, "frobnicate");
        Assert.Equal(64, r.ExitCode);
        Assert.Contains("Unrecognized command or argument 'frobnicate'", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("dispatch check [-c FILE]", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void Check_reads_the_same_file_by_c_by_config_by_DISPATCH_CONFIG_and_without_a_verb_of_its_own()
    {
        var dir = Directory.CreateTempSubdirectory("dispatch-cli-").FullName;
        try
        {
            var bad = Path.Combine(dir, "bad.json");
            File.WriteAllText(bad, """{ "dispatcher": { "headerTimout": "5s" } }""");
            var env = new Dictionary<string, string> { ["DISPATCH_CONFIG"] = bad };
            foreach (var r in new[] { Master(null, "check", "-c", bad), Master(null, "check", "--config", bad), Master(env, "check") })
            {
                Assert.Equal(1, r.ExitCode);
                Assert.Contains($"{bad}:1: dispatcher:headerTimout: unknown setting", r.Stderr, StringComparison.Ordinal);
                Assert.Contains("configuration rejected", r.Stdout, StringComparison.Ordinal);
            }

            // -c wins over DISPATCH_CONFIG.
            var other = Path.Combine(dir, "missing.json");
            var explicitFile = Master(env, "check", "-c", other);
            Assert.Equal(1, explicitFile.ExitCode);
            Assert.Contains(other, explicitFile.Stderr, StringComparison.Ordinal);
            Assert.DoesNotContain("headerTimout", explicitFile.Stderr, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void The_control_verbs_use_the_socket_the_config_names_or_the_one_given()
    {
        var dir = Directory.CreateTempSubdirectory("dispatch-cli-").FullName;
        try
        {
            var socket = Path.Combine(dir, "nothing-listens.sock");
            var config = Path.Combine(dir, "dispatch.json");
            File.WriteAllText(config, new JsonObject { ["control"] = new JsonObject { ["socket"] = socket } }.ToJsonString());
            foreach (var verb in new[] { "status", "reload", "upgrade", "reopen" })
            {
                var byConfig = Master(null, verb, "-c", config);
                Assert.Equal(1, byConfig.ExitCode);
                Assert.Contains($"Cannot reach the master at {socket}", byConfig.Stderr, StringComparison.Ordinal);
                var byDefault = Master(new Dictionary<string, string> { ["DISPATCH_CONFIG"] = config }, verb);
                Assert.Contains($"Cannot reach the master at {socket}", byDefault.Stderr, StringComparison.Ordinal);
                var bySocket = Master(null, verb, "-c", config, "--socket", socket + ".other");
                Assert.Contains($"Cannot reach the master at {socket}.other", bySocket.Stderr, StringComparison.Ordinal);
            }

            // A config named explicitly must be readable.
            var missing = Master(null, "status", "--json", "-c", Path.Combine(dir, "missing.json"));
            Assert.Equal(1, missing.ExitCode);
            Assert.Contains("missing.json", missing.Stderr, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [SkippableFact]
    public void Reopen_over_the_control_socket_reopens_the_access_logs_as_SIGUSR1_does()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("cli-reopen");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var logs = Path.Combine(dir, "logs");
        Directory.CreateDirectory(logs);
        File.SetUnixFileMode(logs, (UnixFileMode)0b111_101_101);
        var socket = Path.Combine(dir, "run", "control.sock");
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        var aLog = Path.Combine(logs, "a.access.log");
        config["vhosts"]!["a.localhost"]!["accessLog"] = aLog;
        config["control"] = new JsonObject { ["socket"] = socket };
        // The verb form of run (the other tests start the master without a verb, as the systemd unit does).
        var d = _dispatch = DispatchInstance.StartReady(dir, config, _output, command: [Path.Combine(TestWorld.AppDirectory, "Master"), "run"]);
        var url = $"http://127.0.0.1:{d.HttpPort}";
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", "-A", "before-rotate", $"{url}/").Status);
        Assert.True(Tools.Eventually(() => File.Exists(aLog) && File.ReadAllText(aLog).Contains("before-rotate", StringComparison.Ordinal)));

        File.Move(aLog, aLog + ".1");
        var reopen = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "reopen", "-c", d.ConfigPath);
        Assert.True(reopen.ExitCode == 0, reopen.Stdout + reopen.Stderr);
        Assert.StartsWith("reopened", reopen.Stdout, StringComparison.Ordinal);
        d.WaitForLine(new Regex("Access and error logs reopened"));
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", "-A", "after-rotate", $"{url}/").Status);
        Assert.True(Tools.Eventually(() => File.Exists(aLog) && File.ReadAllText(aLog).Contains("after-rotate", StringComparison.Ordinal)));
        Assert.DoesNotContain("after-rotate", File.ReadAllText(aLog + ".1"), StringComparison.Ordinal);
    }

    public void Dispose() => _dispatch?.Dispose();

    private static Tools.Result Master(IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        var psi = new ProcessStartInfo(BuiltMaster) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        psi.Environment.Remove("DISPATCH_CONFIG");
        psi.Environment.Remove("DISPATCH_PROGRAM");
        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
            psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        return new Tools.Result(p.ExitCode, stdout.Result, stderr.Result);
    }
}
