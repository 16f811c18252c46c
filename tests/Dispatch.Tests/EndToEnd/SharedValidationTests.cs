using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// <c>check</c> and <c>run</c> go through one validation: a config <c>check</c> refuses is refused by
/// <c>run</c> too, with the same error, before anything listens.
/// </summary>
public sealed class SharedValidationTests
{
    private readonly ITestOutputHelper _output;

    public SharedValidationTests(ITestOutputHelper output) => _output = output;

    private static string Master => Path.Combine(TestWorld.AppDirectory, "Master");

    [SkippableFact]
    public void A_metrics_endpoint_on_a_listener_is_refused_by_check_and_by_run()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("shared-validation");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var port = TestWorld.FreePort();
        var config = DispatchInstance.SampleConfig(port, a, b);
        config["metrics"] = new JsonObject { ["listen"] = $"127.0.0.1:{port}" };
        config["control"] = new JsonObject { ["socket"] = Path.Combine(dir, "control.sock") };
        AssertRefusedByCheckAndRun(dir, config, $"metrics:listen: 127.0.0.1:{port} is also a listener");
    }

    /// <summary>
    /// jailProbe.paths over their bytes (sixteen of 4096): before, `check` accepted them and `run` started, to fail when
    /// the dispatcher's set-up (one datagram of 65536 bytes) could not carry them; now both refuse them, with the same error.
    /// </summary>
    [SkippableFact]
    public void Probe_paths_over_their_bytes_are_refused_by_check_and_by_run()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("shared-probe-bytes");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["jailProbe"]!["paths"] = new JsonArray([.. Enumerable.Range(0, 16).Select(i => (JsonNode)$"/etc/probe{i:D2}/{new string('p', 4096 - 13)}")]);
        config["control"] = new JsonObject { ["socket"] = Path.Combine(dir, "control.sock") };
        AssertRefusedByCheckAndRun(dir, config, "jailProbe:paths: 65536 bytes in all: at most 16384");
    }

    /// <summary>`check` exits 1 and `run` exits 78 before "Dispatch ready", each saying <paramref name="expected"/>.</summary>
    private void AssertRefusedByCheckAndRun(string dir, JsonObject config, string expected)
    {
        var path = Path.Combine(dir, "dispatch.json");
        File.WriteAllText(path, config.ToJsonString());

        var check = Tools.Run(Master, "check", "--config", path);
        _output.WriteLine(check.Stdout + check.Stderr);
        Assert.Equal(1, check.ExitCode);
        Assert.Contains(expected, check.Stderr, StringComparison.Ordinal);

        using var run = DispatchInstance.Start(dir, config, _output);
        Assert.Equal(78, run.WaitForExit());
        Assert.Contains(expected, run.Log, StringComparison.Ordinal);
        Assert.DoesNotContain("Dispatch ready", run.Log, StringComparison.Ordinal);
    }
}
