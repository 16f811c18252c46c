using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// systemd (Type=notify) hears STOPPING=1 on every way the master stops: SIGTERM, SIGINT and SIGQUIT the
/// moment READY=1 arrives, a signal during the start, and fatal errors before and after READY=1. Every
/// master here is started with its signals inherited as ignored, as a background job of a script starts it.
/// (A second signal during a drain: <see cref="StopAndUpgradeTests"/>.)
/// </summary>
public sealed class SystemdNotifyTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;
    private FakeSystemd? _systemd;

    public SystemdNotifyTests(ITestOutputHelper output) => _output = output;

    private (string Dir, JsonObject Config) Prepare(string name)
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory(name);
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["jailProbe"]!["threads"] = 4;
        _systemd = new FakeSystemd(dir);
        return (dir, config);
    }

    private static void Kill(string signal, int pid) =>
        Assert.Equal(0, Tools.Run("kill", $"-{signal}", pid.ToString(CultureInfo.InvariantCulture)).ExitCode);

    /// <summary>Notifications until the first STOPPING=1 (a READY=1 may come first); returns that one.</summary>
    private string NextStopping()
    {
        while (true)
        {
            var n = _systemd!.Next();
            _output.WriteLine($"systemd heard: {n.Replace("\n", "\\n", StringComparison.Ordinal)}");
            if (n.StartsWith("STOPPING=1", StringComparison.Ordinal))
                return n;
            Assert.StartsWith("READY=1", n, StringComparison.Ordinal);
        }
    }

    [SkippableTheory]
    [InlineData("QUIT", "STOPPING=1\nSTATUS=stopping at once")]
    [InlineData("TERM", "STOPPING=1\nSTATUS=stopping: open connections have 30 s to finish")]
    [InlineData("INT", "STOPPING=1\nSTATUS=stopping: open connections have 30 s to finish")]
    public void A_signal_the_moment_READY_arrives_stops_the_master_and_systemd_hears_STOPPING(string signal, string expected)
    {
        var (dir, config) = Prepare($"notify-{signal.ToLowerInvariant()}");
        _dispatch = DispatchInstance.StartReady(dir, config, _output, FakeSystemd.IgnoringSignals, _systemd!.Environment);
        Assert.Equal("READY=1\nSTATUS=serving", _systemd.Next());
        Kill(signal, _dispatch.MasterPid);
        Assert.Equal(expected, _systemd.Next());
        Assert.Equal(0, _dispatch.WaitForExit());
        Assert.True(Tools.Eventually(() => !Directory.Exists($"/proc/{_dispatch.DispatcherPid}")), "the dispatcher outlived the master");
    }

    [SkippableFact]
    public void SIGTERM_during_the_start_stops_the_master_and_systemd_hears_STOPPING()
    {
        var (dir, config) = Prepare("notify-starting");
        _dispatch = DispatchInstance.Start(dir, config, _output, FakeSystemd.IgnoringSignals, _systemd!.Environment);
        // Logged once the signals are handled, before the master binds or starts anything.
        _dispatch.WaitForLine(new Regex(@"Master \d+ starting"));
        Kill("TERM", _dispatch.MasterPid);
        Assert.StartsWith("STOPPING=1\n", NextStopping(), StringComparison.Ordinal);
        Assert.Equal(0, _dispatch.WaitForExit());
        _dispatch.WaitForLine(new Regex(@"Master \d+ exiting with status 0"));
    }

    [SkippableFact]
    public void A_fatal_error_at_the_start_still_tells_systemd_STOPPING()
    {
        var (dir, config) = Prepare("notify-port-taken");
        var port = int.Parse(config["listen"]![0]!["endpoint"]!.GetValue<string>().Split(':')[^1], CultureInfo.InvariantCulture);
        using var taken = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, port);
        taken.Start();
        _dispatch = DispatchInstance.Start(dir, config, _output, FakeSystemd.IgnoringSignals, _systemd!.Environment);
        Assert.Equal("STOPPING=1\nSTATUS=stopping after a fatal error (see the log)", _systemd.Next());
        Assert.Equal(1, _dispatch.WaitForExit());
        _dispatch.WaitForLine(new Regex(@"Could not listen"));
    }

    [SkippableFact]
    public void A_fatal_error_after_READY_still_tells_systemd_STOPPING()
    {
        // A copy of the binaries of this test's own, so one can be broken: the dispatcher cannot be restarted.
        var (dir, config) = Prepare("notify-fatal");
        var app = Path.Combine(dir, "app");
        Assert.Equal(0, Tools.Run("cp", "-a", TestWorld.AppDirectory, app).ExitCode);
        _dispatch = DispatchInstance.StartReady(dir, config, _output, FakeSystemd.IgnoringSignals, _systemd!.Environment, [Path.Combine(app, "Master")]);
        Assert.Equal("READY=1\nSTATUS=serving", _systemd.Next());
        File.SetUnixFileMode(Path.Combine(app, "TlsDispatcher"), UnixFileMode.None);
        Kill("KILL", _dispatch.DispatcherPid);
        Assert.Equal("STOPPING=1\nSTATUS=stopping after a fatal error (see the log)", _systemd.Next());
        Assert.Equal(1, _dispatch.WaitForExit());
        _dispatch.WaitForLine(new Regex(@"Could not restart dispatcher slot 0: .*Permission denied"));
    }

    /// <summary>
    /// Under systemd with the output in the journal, systemd names the stream in JOURNAL_STREAM ("dev:ino"); the master's
    /// lines then begin with their syslog priority, which journald keeps as each entry's (<c>journalctl -p</c>). A
    /// variable that names another stream (inherited by a master whose output was redirected) changes nothing.
    /// </summary>
    [SkippableTheory]
    [InlineData(true)]
    [InlineData(false)]
    public void Lines_carry_their_syslog_priority_only_when_stdout_is_the_journals_stream(bool journal)
    {
        var (dir, config) = Prepare(journal ? "journal-stream" : "journal-stream-other");
        // The shell finds its stdout's device and inode (the stream the test reads), as systemd would have set them.
        string[] wrapper = journal
            ? ["/bin/sh", "-c", "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/$$/fd/1); export JOURNAL_STREAM; exec \"$0\" \"$@\""]
            : ["/bin/sh", "-c", "JOURNAL_STREAM=$(stat -L -c %d:%i /proc/$$/fd/0); export JOURNAL_STREAM; exec \"$0\" \"$@\""];
        _dispatch = DispatchInstance.StartReady(dir, config, _output, wrapper);
        var ready = _dispatch.Log.Split('\n').Single(l => l.Contains("Dispatch ready", StringComparison.Ordinal));
        // A child's line, as the master re-logs it: its role and pool unquoted, as without the journal.
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Status);
        var child = _dispatch.WaitForLine(new Regex(@"^(<6>)?\[[^\]]+ INF\] Worker \d+ \(a\): ")).Value;

        // A rejected config: its errors are logged (and the last good one keeps serving).
        File.WriteAllText(_dispatch.ConfigPath, "{ \"listen\": ");
        Kill("HUP", _dispatch.MasterPid);
        _dispatch.WaitForLine(new Regex("ERR\\] .*(config|JSON)", RegexOptions.IgnoreCase));
        var error = _dispatch.Log.Split('\n').First(l => Regex.IsMatch(l, "ERR\\] .*(config|JSON)", RegexOptions.IgnoreCase));

        if (journal)
        {
            Assert.StartsWith("<6>[", ready, StringComparison.Ordinal);
            Assert.StartsWith("<6>[", child, StringComparison.Ordinal);
            Assert.StartsWith("<3>[", error, StringComparison.Ordinal);
        }
        else
        {
            Assert.StartsWith("[", ready, StringComparison.Ordinal);
            Assert.StartsWith("[", child, StringComparison.Ordinal);
            Assert.StartsWith("[", error, StringComparison.Ordinal);
        }
    }

    public void Dispose()
    {
        _dispatch?.Dispose();
        _systemd?.Dispose();
    }
}
