using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>One master per port and per control socket: a second one refuses to start, saying why, and takes nothing.</summary>
public sealed class SingleMasterTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly List<IDisposable> _cleanup = [];

    public SingleMasterTests(ITestOutputHelper output) => _output = output;

    [SkippableTheory]
    [InlineData(1)]
    [InlineData(2)]
    public void A_second_master_on_the_same_ports_or_control_socket_exits_and_the_first_keeps_every_request(int processes)
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory($"single-master-{processes}");
        var rootA = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "first" });
        var rootB = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var port = TestWorld.FreePort();
        var config = DispatchInstance.SampleConfig(port, rootA, rootB);
        config["dispatcher"]!["processes"] = processes;
        var first = DispatchInstance.StartReady(dir, config, _output);
        _cleanup.Add(first);

        // Same ports, its own control socket: the bind fails.
        var samePorts = TestWorld.NewTestDirectory("second-ports");
        var copy = config.DeepClone().AsObject();
        copy["control"] = new JsonObject { ["socket"] = Path.Combine(samePorts, "control.sock") };
        using (var second = DispatchInstance.Start(samePorts, copy, _output))
        {
            Assert.Equal(1, second.WaitForExit());
            Assert.Contains("Address already in use", second.Log, StringComparison.Ordinal);
            Assert.DoesNotContain("Dispatch ready", second.Log, StringComparison.Ordinal);
        }

        // Other ports, the same control socket: refused before it binds anything.
        var sameSocket = TestWorld.NewTestDirectory("second-socket");
        var other = config.DeepClone().AsObject();
        var otherPort = TestWorld.FreePort();
        other["listen"] = new JsonArray(new JsonObject { ["endpoint"] = $"127.0.0.1:{otherPort}", ["protocol"] = "http" });
        other["control"] = new JsonObject { ["socket"] = Path.Combine(dir, "control.sock") };
        using (var second = DispatchInstance.Start(sameSocket, other, _output))
        {
            Assert.Equal(1, second.WaitForExit());
            Assert.Contains("another master answers on the control socket", second.Log, StringComparison.Ordinal);
            Assert.DoesNotContain("Dispatch ready", second.Log, StringComparison.Ordinal);
        }

        Assert.NotEqual(0, Tools.Run("curl", "-s", "-o", "/dev/null", "--connect-timeout", "2", $"http://127.0.0.1:{otherPort}/").ExitCode); // it bound nothing

        // Every request still reaches the first master's tenant.
        for (var i = 0; i < 20; i++)
        {
            var r = Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{port}/");
            Assert.Equal((200, "first"), (r.Status, r.Body));
        }
    }

    public void Dispose()
    {
        foreach (var item in _cleanup)
            item.Dispose();
    }
}
