using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// Privilege modules: the built-in limits module, and third-party modules as native shared libraries
/// (docs/modules.md) — the C# sample published with NativeAOT (libumask.so) and the C sample
/// (libaffinity.so), both built with the tests — loaded only from root-owned paths.
/// </summary>
public sealed class ModuleTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public ModuleTests(ITestOutputHelper output) => _output = output;

    private static string Configuration =>
        typeof(ModuleTests).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyConfigurationAttribute), false)
            .Cast<System.Reflection.AssemblyConfigurationAttribute>().First().Configuration;

    /// <summary>Where the test build put each sample (Dispatch.Tests.csproj, target BuildSampleModules).</summary>
    private static string Built(string module) => module switch
    {
        "umask" => Path.Combine(TestWorld.RepoRoot, "samples", "modules", "UmaskModule", "bin", Configuration, "net10.0", "linux-x64", "publish", "libumask.so"),
        "affinity" => Path.Combine(TestWorld.RepoRoot, "samples", "modules", "affinity", "bin", "libaffinity.so"),
        _ => throw new ArgumentOutOfRangeException(nameof(module)),
    };

    /// <summary>Copies the built sample into DIR/modules (0755, or 0777 when <paramref name="writableDirectory"/>), mode <paramref name="fileMode"/>.</summary>
    private static string StageModule(string dir, string module, bool writableDirectory = false, int fileMode = 0b111_101_101)
    {
        var built = Built(module);
        Assert.True(File.Exists(built), $"the sample module is not built at {built} (building tests/Dispatch.Tests builds it)");
        var modules = Path.Combine(dir, writableDirectory ? "modules-open" : "modules");
        Directory.CreateDirectory(modules);
        File.SetUnixFileMode(modules, writableDirectory ? (UnixFileMode)0b111_111_111 : (UnixFileMode)0b111_101_101);
        var target = Path.Combine(modules, Path.GetFileName(built));
        File.Copy(built, target);
        File.SetUnixFileMode(target, (UnixFileMode)fileMode);
        return target;
    }

    /// <summary>Two pools; pool a uses the given modules (name → its settings), each staged from its sample.</summary>
    private static (string Dir, JsonObject Config) Setup(string name, params (string Module, JsonObject Settings, string Library)[] modules)
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory(name);
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        var top = new JsonObject();
        var pool = new JsonObject();
        foreach (var (module, settings, library) in modules)
        {
            top[module] = new JsonObject { ["library"] = library.Length > 0 ? library : StageModule(dir, module) };
            pool[module] = settings;
        }

        config["modules"] = top;
        config["pools"]!["a"]!["modules"] = pool;
        return (dir, config);
    }

    private static (string, JsonObject, string) Umask(string mask, string library = "") => ("umask", new JsonObject { ["umask"] = mask }, library);

    private static (string, JsonObject, string) Affinity(string cpus, string library = "") => ("affinity", new JsonObject { ["cpus"] = cpus }, library);

    /// <summary><c>Master check</c>: "OK", or what it printed on stderr.</summary>
    private string Check(string dir, JsonObject config)
    {
        var file = Path.Combine(dir, "dispatch.json");
        File.WriteAllText(file, config.ToJsonString());
        var r = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", file);
        _output.WriteLine(r.Stdout + r.Stderr);
        return r.ExitCode == 0 ? "OK" : r.Stderr;
    }

    /// <summary><c>Master check</c> refuses the config and <c>Master run</c> exits 78 on it, each saying every line of <paramref name="expected"/>.</summary>
    private void AssertRefusedByCheckAndRun(string dir, JsonObject config, params string[] expected)
    {
        var check = Check(dir, config);
        using var d = DispatchInstance.Start(dir, config, _output);
        Assert.Equal(78, d.WaitForExit());
        foreach (var line in expected)
        {
            Assert.Contains(line, check, StringComparison.Ordinal);
            Assert.Contains(line, d.Log, StringComparison.Ordinal);
        }
    }

    /// <summary>A CPU this process may use other than its lowest, so that pinning to it is visible.</summary>
    private static string AnotherCpu()
    {
        var allowed = Tools.Status("/proc/self/status")["Cpus_allowed_list"];
        var cpus = allowed.Split(',').SelectMany(r =>
        {
            var ends = r.Split('-').Select(x => int.Parse(x, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
            return Enumerable.Range(ends[0], ends[^1] - ends[0] + 1);
        }).ToList();
        Assert.True(cpus.Count > 1, $"this test needs two CPUs to see a worker pinned to one (allowed: {allowed})");
        return cpus[^1].ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    [SkippableFact]
    public void A_csharp_aot_module_a_c_module_and_the_limits_module_shape_the_workers_process()
    {
        var cpu = AnotherCpu();
        var (dir, config) = Setup("modules", Umask("027"), Affinity(cpu));
        config["pools"]!["a"]!["limits"] = new JsonObject { ["nofile"] = 1024, ["nproc"] = 512, ["cpu"] = 3600, ["fsize"] = 1 << 30, ["as"] = 64L << 30 };
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        var worker = _dispatch.WorkerPid("a");
        var status = Tools.Status($"/proc/{worker}/status");
        Assert.Equal("0027", status["Umask"]);
        // The C module pinned stage 1's main thread; the exec kept it and every thread of the worker inherited it.
        Assert.Equal(cpu, status["Cpus_allowed_list"]);
        foreach (var task in Directory.EnumerateDirectories($"/proc/{worker}/task"))
            Assert.Equal(cpu, Tools.Status(Path.Combine(task, "status"))["Cpus_allowed_list"]);
        var limits = File.ReadAllLines($"/proc/{worker}/limits");
        Assert.Contains(limits, l => l.StartsWith("Max open files", StringComparison.Ordinal) && l.Contains("1024                 1024", StringComparison.Ordinal));
        Assert.Contains(limits, l => l.StartsWith("Max processes", StringComparison.Ordinal) && l.Contains("512                  512", StringComparison.Ordinal));
        Assert.Contains(limits, l => l.StartsWith("Max cpu time", StringComparison.Ordinal) && l.Contains("3600", StringComparison.Ordinal));
        Assert.Contains(limits, l => l.StartsWith("Max file size", StringComparison.Ordinal) && l.Contains("1073741824", StringComparison.Ordinal));
        Assert.Contains(limits, l => l.StartsWith("Max core file size", StringComparison.Ordinal) && l.Contains(" 0 ", StringComparison.Ordinal));
        // Pool b has no module: the default mask, every CPU.
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        var other = Tools.Status($"/proc/{_dispatch.WorkerPid("b")}/status");
        Assert.NotEqual("0027", other["Umask"]);
        Assert.Equal(Tools.Status("/proc/self/status")["Cpus_allowed_list"], other["Cpus_allowed_list"]);
    }

    [SkippableFact]
    public void A_failing_validate_is_a_config_error_naming_the_pool_and_the_module_in_check_and_run()
    {
        var (dir, config) = Setup("modules-bad", Umask("abc"), Affinity("zero"));
        var umask = Path.Combine(dir, "modules", "libumask.so");
        var affinity = Path.Combine(dir, "modules", "libaffinity.so");
        string[] expected =
        [
            $"pools:a:modules:umask: module 'umask' ({umask}) refused pool a's settings: umask 'abc' is not three or four octal digits",
            $"pools:a:modules:affinity: module 'affinity' ({affinity}) refused pool a's settings: expects {{ \"cpus\": \"0,2\" }}: CPU numbers from 0 to 1023, separated by commas",
        ];
        AssertRefusedByCheckAndRun(dir, config, expected);
    }

    [SkippableFact]
    public void A_failing_apply_stops_that_worker_with_the_modules_message_and_the_other_pool_keeps_serving()
    {
        // Valid syntax (validate accepts it), but no such CPU here: sched_setaffinity fails in stage 1.
        var (dir, config) = Setup("modules-apply", Umask("027"), Affinity("1000"));
        var affinity = Path.Combine(dir, "modules", "libaffinity.so");
        Assert.Equal("OK", Check(dir, config));
        // The dispatcher keeps asking for a worker of pool a for workerWait, then answers 503.
        config["dispatcher"]!["workerWait"] = "3s";
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        Assert.Equal(503, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        _dispatch.WaitForLine(new System.Text.RegularExpressions.Regex(System.Text.RegularExpressions.Regex.Escape(
            $"privilege module 'affinity' ({affinity}) of pool a: apply failed: sched_setaffinity: Invalid argument (none of these CPUs is available here)")));
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        Assert.DoesNotMatch(@"Worker \d+ for pool a ready", _dispatch.Log);
    }

    [SkippableFact]
    public void A_module_made_writable_after_the_config_was_loaded_is_refused_by_stage_1_and_only_that_pool_fails()
    {
        var (dir, config) = Setup("modules-late", Umask("027"));
        var umask = Path.Combine(dir, "modules", "libumask.so");
        config["dispatcher"]!["workerWait"] = "3s";
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        // Stage 1 checks the library again before loading it: the master's check at load is not trusted for later.
        File.SetUnixFileMode(umask, (UnixFileMode)0b111_111_101);
        Assert.Equal(503, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        _dispatch.WaitForLine(new System.Text.RegularExpressions.Regex(System.Text.RegularExpressions.Regex.Escape(
            $"privilege module 'umask' ({umask}) of pool a: apply failed: refused: {umask} is writable by group or others (mode 775)")));
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
    }

    [SkippableFact]
    public void A_module_that_is_group_writable_or_in_a_directory_others_can_write_is_refused_with_the_reason()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("modules-unsafe");
        var open = StageModule(dir, "umask", writableDirectory: true);
        var groupWritable = StageModule(dir, "affinity", fileMode: 0b111_111_101);
        var (_, config) = Setup("modules-unsafe-cfg", Umask("027", open), Affinity("0", groupWritable));
        string[] expected =
        [
            $"modules:umask:library: refused: {Path.GetDirectoryName(open)} is writable by group or others (mode 777)",
            $"modules:affinity:library: refused: {groupWritable} is writable by group or others (mode 775)",
        ];
        AssertRefusedByCheckAndRun(dir, config, expected);
    }

    [SkippableFact]
    public void A_managed_module_entry_or_a_library_without_the_two_exports_is_refused()
    {
        TestWorld.RequireRoot();
        var (dir, config) = Setup("modules-old", Umask("027"));
        config["modules"]!["old"] = new JsonObject { ["assembly"] = "/usr/lib/x.dll", ["type"] = "X" };
        // A shared library that is root-owned and safe but no module: zlib exports neither function.
        File.Copy("/usr/lib/x86_64-linux-gnu/libz.so.1", Path.Combine(dir, "modules", "libz.so.1"));
        config["modules"]!["z"] = new JsonObject { ["library"] = Path.Combine(dir, "modules", "libz.so.1") };
        var check = Check(dir, config);
        Assert.Contains("modules:old: managed modules (\"assembly\", \"type\") are gone: a module is a shared library named by \"library\" (docs/modules.md)", check, StringComparison.Ordinal);
        Assert.Contains($"modules:z:library: refused: {Path.Combine(dir, "modules", "libz.so.1")}: exports no function 'validate'", check, StringComparison.Ordinal);
    }

    public void Dispose() => _dispatch?.Dispose();
}
