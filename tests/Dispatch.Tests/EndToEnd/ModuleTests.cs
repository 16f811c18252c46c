using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>Privilege modules: the built-in limits module and a third-party module loaded only from a root-owned path.</summary>
public sealed class ModuleTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public ModuleTests(ITestOutputHelper output) => _output = output;

    private static string StageModule(string dir, bool worldWritable)
    {
        var configuration = typeof(ModuleTests).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyConfigurationAttribute), false)
            .Cast<System.Reflection.AssemblyConfigurationAttribute>().First().Configuration;
        var built = Path.Combine(TestWorld.RepoRoot, "samples", "modules", "UmaskModule", "bin", configuration, "net10.0", "Dispatch.Example.UmaskModule.dll");
        Assert.True(File.Exists(built), $"the example module is not built at {built}");
        var modules = Path.Combine(dir, "modules");
        Directory.CreateDirectory(modules);
        File.SetUnixFileMode(modules, worldWritable ? (UnixFileMode)0b111_111_111 : (UnixFileMode)0b111_101_101);
        var target = Path.Combine(modules, "Dispatch.Example.UmaskModule.dll");
        File.Copy(built, target);
        File.SetUnixFileMode(target, (UnixFileMode)0b110_100_100);
        return target;
    }

    private static (string Dir, JsonObject Config) Setup(string name, bool worldWritable, string umask)
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory(name);
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["modules"] = new JsonObject { ["umask"] = new JsonObject { ["assembly"] = StageModule(dir, worldWritable), ["type"] = "Dispatch.Example.UmaskModule" } };
        var pool = config["pools"]!["a"]!;
        pool["modules"] = new JsonObject { ["umask"] = new JsonObject { ["umask"] = umask } };
        pool["limits"] = new JsonObject { ["nofile"] = 1024, ["nproc"] = 512, ["cpu"] = 3600, ["fsize"] = 1 << 30, ["as"] = 64L << 30 };
        return (dir, config);
    }

    private string Check(string dir, JsonObject config)
    {
        var file = Path.Combine(dir, "dispatch.json");
        File.WriteAllText(file, config.ToJsonString());
        var r = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", file);
        _output.WriteLine(r.Stdout + r.Stderr);
        return r.ExitCode == 0 ? "OK" : r.Stderr;
    }

    [SkippableFact]
    public void A_third_party_module_and_the_limits_module_shape_the_workers_process()
    {
        var (dir, config) = Setup("modules", worldWritable: false, umask: "027");
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        var worker = _dispatch.WorkerPid("a");
        Assert.Equal("0027", Tools.Status($"/proc/{worker}/status")["Umask"]);
        var limits = File.ReadAllLines($"/proc/{worker}/limits");
        Assert.Contains(limits, l => l.StartsWith("Max open files", StringComparison.Ordinal) && l.Contains("1024                 1024", StringComparison.Ordinal));
        Assert.Contains(limits, l => l.StartsWith("Max processes", StringComparison.Ordinal) && l.Contains("512                  512", StringComparison.Ordinal));
        Assert.Contains(limits, l => l.StartsWith("Max cpu time", StringComparison.Ordinal) && l.Contains("3600", StringComparison.Ordinal));
        Assert.Contains(limits, l => l.StartsWith("Max file size", StringComparison.Ordinal) && l.Contains("1073741824", StringComparison.Ordinal));
        Assert.Contains(limits, l => l.StartsWith("Max core file size", StringComparison.Ordinal) && l.Contains(" 0 ", StringComparison.Ordinal));
        // Pool b has no module: the default mask.
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        Assert.NotEqual("0027", Tools.Status($"/proc/{_dispatch.WorkerPid("b")}/status")["Umask"]);
    }

    [SkippableFact]
    public void A_module_in_a_directory_others_can_write_is_refused_with_the_reason()
    {
        var (dir, config) = Setup("modules-unsafe", worldWritable: true, umask: "027");
        Assert.Contains("modules:umask:assembly: refused: " + Path.Combine(dir, "modules") + " is writable by group or others", Check(dir, config), StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_module_rejects_bad_settings_at_config_load_naming_the_pool_and_field()
    {
        var (dir, config) = Setup("modules-bad", worldWritable: false, umask: "abc");
        Assert.Contains("pools:a:modules:umask: umask 'abc' is not three or four octal digits", Check(dir, config), StringComparison.Ordinal);
    }

    public void Dispose() => _dispatch?.Dispose();
}
