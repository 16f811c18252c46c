using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>Several dispatchers on the same ports, and a crashed dispatcher replaced without a restart.</summary>
public sealed class DispatcherLifecycleTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public DispatcherLifecycleTests(ITestOutputHelper output) => _output = output;

    private DispatchInstance Start(string name, int processes)
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory(name);
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["dispatcher"]!["processes"] = processes;
        config["jailProbe"]!["threads"] = 4;
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        return _dispatch;
    }

    [SkippableFact]
    public void Two_dispatchers_share_the_ports_and_both_accept_connections()
    {
        var d = Start("two-dispatchers", 2);
        var more = d.WaitForLine(new Regex(@"more dispatchers: (?<pid>\d+)"));
        var second = int.Parse(more.Groups["pid"].Value, System.Globalization.CultureInfo.InvariantCulture);
        for (var i = 0; i < 40; i++)
            Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
        // Each dispatcher that took a connection asked for (and was given) its own worker of pool a.
        var takers = Regex.Matches(d.Log, @"Dispatcher (?<pid>\d+) \(dispatcher\): Worker \d+ of pool a joined").Select(m => int.Parse(m.Groups["pid"].Value, System.Globalization.CultureInfo.InvariantCulture)).Distinct().ToList();
        _output.WriteLine($"dispatchers that served pool a: {string.Join(", ", takers)}");
        Assert.Equal(new[] { d.DispatcherPid, second }.Order(), takers.Order());
    }

    [SkippableFact]
    public void A_crashed_dispatcher_is_replaced_on_the_same_sockets_and_its_workers_leave()
    {
        var d = Start("dispatcher-crash", 1);
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
        var worker = d.WorkerPid("a");
        Assert.Equal(0, Tools.Run("kill", "-KILL", d.DispatcherPid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
        var replaced = d.WaitForLine(new Regex($@"Dispatcher {d.DispatcherPid} \(signal 9\) replaced by dispatcher (?<pid>\d+)"));
        Assert.NotEqual(d.DispatcherPid.ToString(System.Globalization.CultureInfo.InvariantCulture), replaced.Groups["pid"].Value);
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
        d.WaitForLine(new Regex($@"Worker {worker} of pool a exited \(exit code 0\)"));
        Assert.NotEqual(worker, d.WorkerPid("a", skip: 1));
    }

    [SkippableFact]
    public void Systemd_hears_ready_and_stopping_and_SIGQUIT_stops_at_once()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("systemd");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        using var systemd = new FakeSystemd(dir);
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        // Started as a background job of a script starts it: SIGQUIT inherited as ignored (it once did nothing then).
        _dispatch = DispatchInstance.StartReady(dir, config, _output, FakeSystemd.IgnoringSignals, systemd.Environment);
        Assert.Equal("READY=1\nSTATUS=serving", systemd.Next());
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        var worker = _dispatch.WorkerPid("a");

        Assert.Equal(0, Tools.Run("kill", "-QUIT", _dispatch.MasterPid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
        Assert.Equal("STOPPING=1\nSTATUS=stopping at once", systemd.Next());
        Assert.Equal(0, _dispatch.WaitForExit());
        Assert.False(Directory.Exists($"/proc/{worker}"));
    }

    public void Dispose() => _dispatch?.Dispose();
}
