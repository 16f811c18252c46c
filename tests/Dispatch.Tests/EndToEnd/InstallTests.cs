using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// One real install (packaging/install.sh, as root, of the executables scripts/publish.sh published: what
/// the other tests run; publishing from source is scripts/publish.sh, run before the tests) into a scratch tree under
/// /var/lib/dispatch-tests: every location overridden, a system user of its own. Removed with
/// uninstall --purge when the class is done.
/// </summary>
public sealed class InstallFixture : IDisposable
{
    public InstallFixture()
    {
        if (!TestWorld.IsRoot)
        {
            SkipReason = "INSTALL TEST SKIPPED: must run as root (it creates a system user and root-owned directories); CI runs as root.";
            return;
        }

        if (!File.Exists("/usr/sbin/useradd") && !File.Exists("/sbin/useradd"))
        {
            SkipReason = "INSTALL TEST SKIPPED: useradd is missing (Debian: apt-get install passwd; .ci/run does).";
            return;
        }

        Layout = InstallLayout.Create("install");
        Result = InstallScript.Run(Layout, []);
    }

    public string? SkipReason { get; }

    public InstallLayout Layout { get; } = null!;

    public InstallScript.Outcome Result { get; } = null!;

    /// <summary>Skips loudly when the install could not be tried; fails with the script's output when it failed.</summary>
    public InstallLayout Installed()
    {
        Skip.If(SkipReason is not null, SkipReason);
        Assert.True(Result.ExitCode == 0, $"install.sh failed ({Result.ExitCode}):\n{Result.Output}");
        return Layout;
    }

    public void Dispose() => Layout?.Remove();
}

/// <summary>Every location the script takes, under one fresh root-owned directory, and a test-only user.</summary>
public sealed record InstallLayout(string Root, string User)
{
    public string LibDir => Path.Combine(Root, "usr/lib/dispatch");

    public string EtcDir => Path.Combine(Root, "etc/dispatch");

    public string LogDir => Path.Combine(Root, "var/log/dispatch");

    public string DataDir => Path.Combine(Root, "var/lib/dispatch");

    public string SystemdDir => Path.Combine(Root, "etc/systemd/system");

    public string SbinDir => Path.Combine(Root, "usr/sbin");

    public string Config => Path.Combine(EtcDir, "dispatch.json");

    public string Unit => Path.Combine(SystemdDir, "dispatch.service");

    public string Command => Path.Combine(SbinDir, "dispatch");

    public static InstallLayout Create(string name)
    {
        Directory.CreateDirectory("/var/lib/dispatch-tests");
        File.SetUnixFileMode("/var/lib/dispatch-tests", (UnixFileMode)0b111_101_101);
        var root = Path.Combine("/var/lib/dispatch-tests", $"{name}-{Guid.NewGuid():N}"[..(name.Length + 9)]);
        Directory.CreateDirectory(root);
        File.SetUnixFileMode(root, (UnixFileMode)0b111_101_101);
        return new InstallLayout(root, $"dispatch-t{Guid.NewGuid():N}"[..18]);
    }

    public Dictionary<string, string> Environment() => new()
    {
        ["DISPATCH_LIBDIR"] = LibDir,
        ["DISPATCH_ETCDIR"] = EtcDir,
        ["DISPATCH_LOGDIR"] = LogDir,
        ["DISPATCH_DATADIR"] = DataDir,
        ["SYSTEMD_DIR"] = SystemdDir,
        ["SBINDIR"] = SbinDir,
        ["DISPATCH_USER"] = User,
    };

    /// <summary>Cleanup: the script's own purge, then whatever it left (a failed test must not leave a user behind).</summary>
    public void Remove()
    {
        try
        {
            InstallScript.Run(this, ["--uninstall", "--purge"]);
        }
        finally
        {
            if (UserExists(User))
                Tools.Run("userdel", User);
            Directory.Delete(Root, recursive: true);
        }
    }

    public static bool UserExists(string name) => Tools.Run("getent", "passwd", name).ExitCode == 0;
}

/// <summary>Runs packaging/install.sh with a layout's locations (and nothing of the caller's DISPATCH_* or MSBuild variables).</summary>
public static class InstallScript
{
    public sealed record Outcome(int ExitCode, string Output);

    public static Outcome Run(InstallLayout layout, string[] args, IReadOnlyDictionary<string, string>? extra = null, string[]? asUser = null, string script = "install.sh")
    {
        script = Path.Combine(TestWorld.RepoRoot, "packaging", script);
        var psi = new ProcessStartInfo(asUser is null ? "bash" : "setpriv") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in asUser ?? [])
            psi.ArgumentList.Add(a);
        if (asUser is not null)
            psi.ArgumentList.Add("bash");
        psi.ArgumentList.Add(script);
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("DISPATCH_", StringComparison.Ordinal) || k.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase) || k is "SYSTEMD_DIR" or "SBINDIR").ToList())
            psi.Environment.Remove(key);
        foreach (var (key, value) in layout.Environment())
            psi.Environment[key] = value;
        // The published NativeAOT executables (no second publish of minutes per install); a test may name others.
        psi.Environment["DISPATCH_BINARIES"] = TestWorld.PublishedDirectory;
        foreach (var (key, value) in extra ?? new Dictionary<string, string>())
            psi.Environment[key] = value;
        var output = new System.Text.StringBuilder();
        using var p = Process.Start(psi)!;
        p.OutputDataReceived += (_, e) =>
        {
            lock (output)
                output.AppendLine(e.Data);
        };
        p.ErrorDataReceived += (_, e) =>
        {
            lock (output)
                output.AppendLine(e.Data);
        };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        // Copies and checks, seconds; generous for a loaded 2-core machine.
        if (!p.WaitForExit(TimeSpan.FromMinutes(15)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{script} {string.Join(' ', args)} did not finish:\n{output}");
        }

        p.WaitForExit();
        lock (output)
            return new Outcome(p.ExitCode, output.ToString());
    }
}

/// <summary>packaging/install.sh and uninstall: the real script, as root, into a scratch tree.</summary>
public sealed class InstallTests : IClassFixture<InstallFixture>
{
    private readonly InstallFixture _fixture;
    private readonly ITestOutputHelper _output;

    public InstallTests(InstallFixture fixture, ITestOutputHelper output)
    {
        _fixture = fixture;
        _output = output;
    }

    private static string Stat(string path) => Tools.Run("stat", "-c", "%U:%G %a", path).Stdout.Trim();

    [SkippableFact]
    public void Install_lays_out_root_owned_directories_and_creates_the_system_user()
    {
        var l = _fixture.Installed();
        _output.WriteLine(_fixture.Result.Output);
        Assert.Equal("root:root 755", Stat(l.LibDir));
        Assert.Equal("root:root 755", Stat(l.EtcDir));
        Assert.Equal("root:root 700", Stat(Path.Combine(l.EtcDir, "certs")));
        Assert.Equal("root:root 755", Stat(l.LogDir));
        Assert.Equal("root:root 755", Stat(l.DataDir));
        Assert.Equal("root:root 644", Stat(l.Config));
        Assert.Equal("root:root 644", Stat(l.Unit));
        Assert.Equal("root:root 755", Stat(l.Command));
        foreach (var exe in new[] { "Master", "TlsDispatcher", "Worker" })
            Assert.Equal("root:root 755", Stat(Path.Combine(l.LibDir, exe)));

        // What the master demands of its own directory: every component up to / root-owned and
        // writable by no one else, and every installed file too.
        for (var dir = l.LibDir; dir != "/"; dir = Path.GetDirectoryName(dir)!)
        {
            var s = Stat(dir).Split(' ');
            Assert.True(s[0].StartsWith("root:", StringComparison.Ordinal) && (Convert.ToInt32(s[1], 8) & 0x12) == 0 /* no group or other write */, $"{dir}: {Stat(dir)}");
        }

        foreach (var entry in Directory.EnumerateFileSystemEntries(l.LibDir, "*", SearchOption.AllDirectories))
        {
            var s = Stat(entry).Split(' ');
            Assert.True(s[0] == "root:root" && (Convert.ToInt32(s[1], 8) & 0x12) == 0 /* no group or other write */, $"{entry}: {Stat(entry)}");
        }

        // The dispatcher's system user: no login, no home, below the tenants' uids.
        var passwd = Tools.Run("getent", "passwd", l.User);
        Assert.True(passwd.ExitCode == 0, $"user {l.User} was not created");
        var fields = passwd.Stdout.Trim().Split(':');
        Assert.Equal("/usr/sbin/nologin", fields[6]);
        Assert.False(Directory.Exists(fields[5]), $"home {fields[5]} was created");
        Assert.True(uint.Parse(fields[2], CultureInfo.InvariantCulture) is > 0 and < 1000, $"uid {fields[2]} is not a system uid");
        Assert.Equal(0, Tools.Run("getent", "group", l.User).ExitCode);

        if (!Directory.Exists("/run/systemd/system"))
            Assert.Contains("systemd is not running", _fixture.Result.Output, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void The_starter_config_passes_dispatch_check_and_runs_the_dispatcher_as_the_new_user()
    {
        var l = _fixture.Installed();
        var check = Tools.Run(l.Command, "check", "--config", l.Config);
        Assert.True(check.ExitCode == 0, check.Stdout + check.Stderr);
        Assert.Contains("configuration OK", check.Stdout, StringComparison.Ordinal);
        var byDefault = Tools.Run(l.Command, "check");
        Assert.True(byDefault.ExitCode == 0, byDefault.Stdout + byDefault.Stderr);
        Assert.Contains(l.Config, byDefault.Stdout, StringComparison.Ordinal);

        var config = JsonNode.Parse(File.ReadAllText(l.Config))!;
        Assert.Equal(l.User, config["dispatcher"]!["user"]!.GetValue<string>());
        Assert.Equal(Path.Combine(l.LogDir, "localhost.log"), config["vhosts"]!["localhost"]!["accessLog"]!.GetValue<string>());

        // The check is not vacuous: the same config with a pool as root is refused.
        var dir = TestWorld.NewTestDirectory("install-check");
        config["pools"]!["welcome"]!["user"] = "0";
        var bad = Path.Combine(dir, "bad.json");
        File.WriteAllText(bad, config.ToJsonString());
        var refused = Tools.Run(l.Command, "check", "--config", bad);
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("pools:welcome:user", refused.Stderr, StringComparison.Ordinal);

        var usage = Tools.Run(l.Command, "frobnicate");
        Assert.Equal(64, usage.ExitCode);
        Assert.Contains("dispatch check", usage.Stderr, StringComparison.Ordinal);

        // The installed command's help: on stdout, exit 0, every verb under the command's own name, the installed
        // config as the default of -c; and its version.
        var help = Tools.Run(l.Command, "--help");
        Assert.True(help.ExitCode == 0, help.Stderr);
        Assert.Equal(string.Empty, help.Stderr);
        foreach (var verb in new[] { "run", "check", "status", "reload", "upgrade", "reopen" })
            Assert.Matches(new Regex($@"(?m)^\s+dispatch {verb}\b"), help.Stdout);
        var checkHelp = Tools.Run(l.Command, "check", "--help");
        Assert.True(checkHelp.ExitCode == 0, checkHelp.Stderr);
        Assert.Contains($"[default: {l.Config}]", checkHelp.Stdout, StringComparison.Ordinal);
        var version = Tools.Run(l.Command, "--version");
        Assert.True(version.ExitCode == 0, version.Stderr);
        Assert.Matches(@"^\d+\.\d+\.\d+", version.Stdout.Trim());
    }

    [SkippableFact]
    public void The_unit_starts_the_installed_master_with_the_installed_config()
    {
        var l = _fixture.Installed();
        var unit = File.ReadAllLines(l.Unit);
        Assert.Contains("Type=notify", unit);
        Assert.Equal($"ExecStart={l.LibDir}/Master --config {l.Config}", unit.Single(u => u.StartsWith("ExecStart=", StringComparison.Ordinal)));
        Assert.Equal($"ExecStartPre={l.LibDir}/Master check --config {l.Config}", unit.Single(u => u.StartsWith("ExecStartPre=", StringComparison.Ordinal)));
        // No default path is left behind (the scratch paths end like the defaults: take them out first).
        var rest = string.Join('\n', unit).Replace(l.LibDir, "LIBDIR", StringComparison.Ordinal).Replace(l.Config, "CONFIG", StringComparison.Ordinal);
        Assert.DoesNotContain("/usr/lib/dispatch", rest, StringComparison.Ordinal);
        Assert.DoesNotContain("/etc/dispatch", rest, StringComparison.Ordinal);
        // NativeAOT executables: no .NET runtime to point at, no managed assemblies beside them.
        Assert.DoesNotContain(unit, u => u.Contains("DOTNET_ROOT", StringComparison.Ordinal));
        Assert.DoesNotContain("DOTNET_ROOT", File.ReadAllText(l.Command), StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(l.LibDir, "Master")));
        Assert.Empty(Directory.EnumerateFiles(l.LibDir, "*.dll"));
    }

    [SkippableFact]
    public void The_installed_master_serves_the_starter_site_and_uninstall_refuses_while_it_runs()
    {
        var l = _fixture.Installed();
        var config = JsonNode.Parse(File.ReadAllText(l.Config))!.AsObject();
        var port = TestWorld.FreePort();
        config["listen"]![0]!["endpoint"] = $"127.0.0.1:{port}";
        var dir = TestWorld.NewTestDirectory("installed");
        using (var dispatch = DispatchInstance.StartReady(dir, config, _output, command: [l.Command, "run"]))
        {
            var page = Tools.Curl("-H", "Host: localhost", $"http://127.0.0.1:{port}/");
            Assert.Equal(200, page.Status);
            Assert.Contains("Dispatch is running", page.Body, StringComparison.Ordinal);

            // The processes are the installed ones, and the dispatcher runs as the new system user.
            Assert.Equal(Path.Combine(l.LibDir, "Master"), new FileInfo($"/proc/{dispatch.MasterPid}/exe").LinkTarget);
            Assert.Equal(Path.Combine(l.LibDir, "TlsDispatcher"), new FileInfo($"/proc/{dispatch.DispatcherPid}/exe").LinkTarget);
            var uid = Tools.Run("id", "-u", l.User).Stdout.Trim();
            Assert.StartsWith(uid + "\t", Tools.Status($"/proc/{dispatch.DispatcherPid}/status")["Uid"], StringComparison.Ordinal);
            var log = Path.Combine(l.LogDir, "localhost.log");
            Assert.True(Tools.Eventually(() => File.Exists(log) && File.ReadAllText(log).Contains("\"GET / HTTP/1.1\" 200", StringComparison.Ordinal)), "no access log line");

            // Removing the binaries under a running master would break its next spawn: refused, nothing removed.
            var refused = InstallScript.Run(l, ["--uninstall"]);
            Assert.True(refused.ExitCode != 0, refused.Output);
            Assert.Matches(new Regex($@"Dispatch is running from {Regex.Escape(l.LibDir)} \(pids [0-9 ]*{dispatch.MasterPid}"), refused.Output);
            Assert.True(File.Exists(Path.Combine(l.LibDir, "Master")) && File.Exists(l.Unit) && File.Exists(l.Command));
        }

        Assert.True(File.Exists(Path.Combine(l.LibDir, "Master")));
    }

    /// <summary>Device and inode of the file a path (or /proc/PID/exe) leads to: which tree a binary came from, whatever its path says now.</summary>
    private static string Inode(string path)
    {
        var r = Tools.Run("stat", "-L", "-c", "%d:%i", path);
        Assert.True(r.ExitCode == 0, $"stat {path}: {r.Stderr}");
        return r.Stdout.Trim();
    }

    [SkippableFact]
    public async Task Upgrade_swaps_the_tree_under_a_running_master_without_failing_a_request_and_rollback_swaps_it_back()
    {
        var first = _fixture.Installed();
        var l = InstallLayout.Create("upgrade");
        var previous = l.LibDir + ".previous";
        try
        {
            var install = InstallScript.Run(l, [], new Dictionary<string, string> { ["DISPATCH_BINARIES"] = first.LibDir });
            Assert.True(install.ExitCode == 0, install.Output);
            // The "new version": the same binaries copied (new inodes) with a marker file (no second dotnet publish).
            var newTree = TestWorld.NewTestDirectory("upgrade-tree");
            Assert.Equal(0, Tools.Run("cp", "-a", first.LibDir + "/.", newTree).ExitCode);
            var marker = $"upgrade-{Guid.NewGuid():N}";
            File.WriteAllText(Path.Combine(newTree, "UPGRADE-MARKER"), marker);

            // The installed master, run by the dispatch command with the installed config (its control socket next to it).
            var config = JsonNode.Parse(File.ReadAllText(l.Config))!.AsObject();
            var port = TestWorld.FreePort();
            config["listen"]![0]!["endpoint"] = $"127.0.0.1:{port}";
            config["control"] = new JsonObject { ["socket"] = Path.Combine(l.EtcDir, "control.sock") };
            using var dispatch = DispatchInstance.StartReady(l.EtcDir, config, _output, command: [l.Command, "run"]);
            Assert.Equal(l.Config, dispatch.ConfigPath);
            var oldDispatcher = dispatch.DispatcherPid;
            var oldTree = Inode(Path.Combine(l.LibDir, "TlsDispatcher"));
            Assert.Equal(oldTree, Inode($"/proc/{oldDispatcher}/exe"));

            // A plain install under the running master is refused, pointing at --upgrade.
            var plain = InstallScript.Run(l, [], new Dictionary<string, string> { ["DISPATCH_BINARIES"] = newTree });
            Assert.True(plain.ExitCode != 0, plain.Output);
            Assert.Contains("install.sh --upgrade installs under it", plain.Output, StringComparison.Ordinal);
            Assert.False(File.Exists(Path.Combine(l.LibDir, "UPGRADE-MARKER")));

            long ok = 0;
            var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
            using var stopLoop = new CancellationTokenSource();
            using var client = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.Zero, PooledConnectionIdleTimeout = TimeSpan.Zero });
            client.DefaultRequestHeaders.Host = "localhost";
            client.DefaultRequestHeaders.ConnectionClose = true; // each request on a new connection
            async Task LoopAsync()
            {
                while (!stopLoop.IsCancellationRequested)
                {
                    try
                    {
                        var body = await client.GetStringAsync(new Uri($"http://127.0.0.1:{port}/"), stopLoop.Token);
                        if (body.Contains("Dispatch is running", StringComparison.Ordinal))
                            Interlocked.Increment(ref ok);
                        else
                            failures.Enqueue($"unexpected body '{body}'");
                    }
                    catch (OperationCanceledException) when (stopLoop.IsCancellationRequested)
                    {
                    }
                    catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
                    {
                        failures.Enqueue($"{e.GetType().Name}: {e.Message} {e.InnerException?.Message}");
                    }
                }
            }

            var workerReady = new Regex(@"Worker (?<pid>\d+) for pool welcome ready");
            var loop = LoopAsync();
            try
            {
                Assert.True(Tools.Eventually(() => Interlocked.Read(ref ok) >= 20, TimeSpan.FromSeconds(60)), $"the loop did not get going: {string.Join("; ", failures)}");

                var upgrade = await Task.Run(() => InstallScript.Run(l, ["--upgrade"], new Dictionary<string, string> { ["DISPATCH_BINARIES"] = newTree }));
                _output.WriteLine(upgrade.Output);
                Assert.True(upgrade.ExitCode == 0, upgrade.Output);
                Assert.Contains($"the previous ones are in {previous}", upgrade.Output, StringComparison.Ordinal);
                Assert.Matches(new Regex($@"master: upgraded: dispatchers {oldDispatcher} -> \d+"), upgrade.Output);
                var upgraded = dispatch.WaitForLine(new Regex($@"Upgrade \(control socket, pid \d+\) complete: dispatchers {oldDispatcher} -> (?<new>\d+)"));
                var newDispatcher = int.Parse(upgraded.Groups["new"].Value, CultureInfo.InvariantCulture);
                Assert.NotEqual(oldDispatcher, newDispatcher);

                // LIBDIR is still a real directory, now the new tree; the old one is LIBDIR.previous.
                Assert.Null(new DirectoryInfo(l.LibDir).LinkTarget);
                Assert.Equal(marker, File.ReadAllText(Path.Combine(l.LibDir, "UPGRADE-MARKER")));
                Assert.False(File.Exists(Path.Combine(previous, "UPGRADE-MARKER")));
                Assert.Equal(oldTree, Inode(Path.Combine(previous, "TlsDispatcher")));
                Assert.Equal("root:root 755", Stat(l.LibDir));
                Assert.Equal("root:root 755", Stat(Path.Combine(l.LibDir, "TlsDispatcher")));

                // The new dispatcher runs the new tree's binary (its inode, not just its path), and so does the next worker.
                var newTree2 = Inode(Path.Combine(l.LibDir, "TlsDispatcher"));
                Assert.NotEqual(oldTree, newTree2);
                Assert.Equal(newTree2, Inode($"/proc/{newDispatcher}/exe"));
                Assert.Equal(Path.Combine(l.LibDir, "TlsDispatcher"), new FileInfo($"/proc/{newDispatcher}/exe").LinkTarget);
                var after = Interlocked.Read(ref ok);
                Assert.True(Tools.Eventually(() => Interlocked.Read(ref ok) >= after + 20, TimeSpan.FromSeconds(60)), "the loop stalled after the upgrade");
                // The first worker ready after the upgrade (it serves the new dispatcher's connections).
                var newWorker = 0;
                Assert.True(Tools.Eventually(() =>
                {
                    var lines = dispatch.Log.Split('\n');
                    var m = lines.SkipWhile(line => !line.Contains(upgraded.Value, StringComparison.Ordinal)).Select(line => workerReady.Match(line)).FirstOrDefault(x => x.Success);
                    newWorker = m is null ? 0 : int.Parse(m.Groups["pid"].Value, CultureInfo.InvariantCulture);
                    return newWorker != 0;
                }), "no worker started after the upgrade");
                Assert.Equal(Inode(Path.Combine(l.LibDir, "Worker")), Inode($"/proc/{newWorker}/exe"));

                // dispatch status (the wrapper, the installed config's control socket) shows the new dispatcher serving.
                var status = Tools.Run(l.Command, "status");
                _output.WriteLine(status.Stdout + status.Stderr);
                Assert.True(status.ExitCode == 0, status.Stdout + status.Stderr);
                Assert.Matches(new Regex($@"pid {newDispatcher}\s+uid \d+\s+serving"), status.Stdout);
                var json = JsonNode.Parse(Tools.Run(l.Command, "status", "--json").Stdout)!;
                Assert.Contains(json["dispatchers"]!.AsArray(), d => d!["pid"]!.GetValue<int>() == newDispatcher && d["state"]!.GetValue<string>() == "serving");

                // The master still runs its old image, now under LIBDIR.previous: uninstall still refuses.
                Assert.Equal(Path.Combine(previous, "Master"), new FileInfo($"/proc/{dispatch.MasterPid}/exe").LinkTarget);
                var refused = InstallScript.Run(l, ["--uninstall"]);
                Assert.True(refused.ExitCode != 0, refused.Output);
                Assert.Matches(new Regex($@"Dispatch is running from {Regex.Escape(l.LibDir)} \(pids [0-9 ]*{dispatch.MasterPid}"), refused.Output);
                Assert.True(File.Exists(Path.Combine(l.LibDir, "Master")) && File.Exists(Path.Combine(previous, "Master")));

                // Rollback: the same swap back, and the master upgrades onto the old tree again.
                var rollback = await Task.Run(() => InstallScript.Run(l, ["--rollback"]));
                _output.WriteLine(rollback.Output);
                Assert.True(rollback.ExitCode == 0, rollback.Output);
                var back = dispatch.WaitForLine(new Regex($@"Upgrade \(control socket, pid \d+\) complete: dispatchers {newDispatcher} -> (?<back>\d+)"));
                var backDispatcher = int.Parse(back.Groups["back"].Value, CultureInfo.InvariantCulture);
                Assert.Equal(oldTree, Inode($"/proc/{backDispatcher}/exe"));
                Assert.False(File.Exists(Path.Combine(l.LibDir, "UPGRADE-MARKER")));
                Assert.True(File.Exists(Path.Combine(previous, "UPGRADE-MARKER")));
                var afterRollback = Interlocked.Read(ref ok);
                Assert.True(Tools.Eventually(() => Interlocked.Read(ref ok) >= afterRollback + 20, TimeSpan.FromSeconds(60)), "the loop stalled after the rollback");
            }
            finally
            {
                await stopLoop.CancelAsync();
                await loop;
            }

            // Closes a connection the client may still hold without a request on it (one being opened when the loop was
            // cancelled is kept, idle, in its pool): the master's stop below would wait for it to time out (the starter
            // config's headerTimeout, 10 s).
            client.Dispose();
            _output.WriteLine($"{Interlocked.Read(ref ok)} requests across the upgrade and the rollback, {failures.Count} failed");
            Assert.Empty(failures);
            dispatch.Dispose();

            // Stopped: uninstall removes both trees.
            var uninstall = InstallScript.Run(l, ["--uninstall"]);
            Assert.True(uninstall.ExitCode == 0, uninstall.Output);
            Assert.False(Directory.Exists(l.LibDir));
            Assert.False(Directory.Exists(previous));
        }
        finally
        {
            l.Remove();
        }
    }

    [SkippableFact]
    public void Reinstall_keeps_the_config_uninstall_keeps_config_and_logs_and_purge_removes_everything()
    {
        var first = _fixture.Installed();
        // A second tree from the first one's published binaries (no second dotnet publish).
        var l = InstallLayout.Create("reinstall");
        var fromBinaries = new Dictionary<string, string> { ["DISPATCH_BINARIES"] = first.LibDir };
        try
        {
            var install = InstallScript.Run(l, [], fromBinaries);
            Assert.True(install.ExitCode == 0, install.Output);
            Assert.Equal(0, Tools.Run(l.Command, "check").ExitCode);

            // The admin edits the config and a log exists; installing again changes neither.
            var edited = File.ReadAllText(l.Config).Replace("\"maxWorkers\": 2", "\"maxWorkers\": 3", StringComparison.Ordinal);
            File.WriteAllText(l.Config, edited);
            File.WriteAllText(Path.Combine(l.LogDir, "localhost.log"), "a line\n");
            var again = InstallScript.Run(l, [], fromBinaries);
            Assert.True(again.ExitCode == 0, again.Output);
            Assert.Contains("kept the existing", again.Output, StringComparison.Ordinal);
            Assert.Contains($"kept user {l.User}", again.Output, StringComparison.Ordinal);
            Assert.Equal(edited, File.ReadAllText(l.Config));

            var uninstall = InstallScript.Run(l, ["--uninstall"]);
            _output.WriteLine(uninstall.Output);
            Assert.True(uninstall.ExitCode == 0, uninstall.Output);
            Assert.False(Directory.Exists(l.LibDir));
            Assert.False(File.Exists(l.Unit));
            Assert.False(File.Exists(l.Command));
            Assert.Equal(edited, File.ReadAllText(l.Config));
            Assert.True(Directory.Exists(Path.Combine(l.EtcDir, "certs")));
            Assert.Equal("a line\n", File.ReadAllText(Path.Combine(l.LogDir, "localhost.log")));
            Assert.True(InstallLayout.UserExists(l.User));

            // Idempotent: a second uninstall says what is not there and succeeds.
            var twice = InstallScript.Run(l, ["--uninstall"]);
            Assert.True(twice.ExitCode == 0, twice.Output);
            Assert.Contains("not present", twice.Output, StringComparison.Ordinal);

            // Every directory the install created carries its mark (purge removes only those whole).
            foreach (var created in new[] { l.EtcDir, Path.Combine(l.EtcDir, "certs"), l.LogDir, l.DataDir, Path.Combine(l.DataDir, "www") })
                Assert.StartsWith($"Installed by Dispatch's packaging/install.sh: created {created};", File.ReadAllText(Path.Combine(created, ".dispatch-install")), StringComparison.Ordinal);
            Assert.Contains("created by packaging/install.sh", Tools.Run("getent", "passwd", l.User).Stdout, StringComparison.Ordinal);

            var purged = InstallScript.Run(l, ["--purge"], script: "uninstall.sh");
            _output.WriteLine(purged.Output);
            Assert.True(purged.ExitCode == 0, purged.Output);
            foreach (var gone in new[] { l.LibDir, l.EtcDir, l.LogDir, l.DataDir })
                Assert.False(Directory.Exists(gone), $"{gone} is still there");
            Assert.False(InstallLayout.UserExists(l.User), $"user {l.User} is still there");
            Assert.NotEqual(0, Tools.Run("getent", "group", l.User).ExitCode);
            Assert.True(InstallScript.Run(l, ["--uninstall", "--purge"]).ExitCode == 0);
        }
        finally
        {
            l.Remove();
        }
    }

    [SkippableFact]
    public void Purge_keeps_a_directory_and_a_user_the_install_did_not_create()
    {
        var first = _fixture.Installed();
        var l = InstallLayout.Create("keep");
        var fromBinaries = new Dictionary<string, string> { ["DISPATCH_BINARIES"] = first.LibDir };
        try
        {
            // Like DISPATCH_DATADIR=/var/www with a site in it, DISPATCH_ETCDIR=/etc/ssl with its certs/,
            // and DISPATCH_USER=www-data: all there before the install (root's, 0755, as the script demands).
            var site = Path.Combine(l.DataDir, "example.org", "index.html");
            var cert = Path.Combine(l.EtcDir, "certs", "example.org.pem");
            foreach (var dir in new[] { Path.GetDirectoryName(site)!, Path.GetDirectoryName(cert)! })
            {
                Directory.CreateDirectory(dir);
                for (var d = dir; d != l.Root; d = Path.GetDirectoryName(d)!)
                    File.SetUnixFileMode(d, (UnixFileMode)0b111_101_101);
            }

            File.WriteAllText(site, "someone's site\n");
            File.WriteAllText(cert, "someone's certificate\n");
            var useradd = Tools.Run("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--user-group", "--comment", "a web server", l.User);
            Assert.True(useradd.ExitCode == 0, useradd.Stderr);

            var install = InstallScript.Run(l, [], fromBinaries);
            _output.WriteLine(install.Output);
            Assert.True(install.ExitCode == 0, install.Output);
            Assert.Contains($"kept user {l.User}", install.Output, StringComparison.Ordinal);
            // Marked: only the directories the install created.
            Assert.True(File.Exists(Path.Combine(l.LogDir, ".dispatch-install")));
            Assert.Equal("root:root 644", Stat(Path.Combine(l.LogDir, ".dispatch-install")));
            Assert.True(File.Exists(Path.Combine(l.DataDir, "www", ".dispatch-install")));
            foreach (var existed in new[] { l.DataDir, l.EtcDir, Path.Combine(l.EtcDir, "certs") })
                Assert.False(File.Exists(Path.Combine(existed, ".dispatch-install")), $"{existed} existed before the install but was marked");
            // Never in a document root (dot-files are served).
            Assert.False(File.Exists(Path.Combine(l.DataDir, "www", "welcome", ".dispatch-install")));
            // A mark copied into a directory of another name does not count.
            File.Copy(Path.Combine(l.LogDir, ".dispatch-install"), Path.Combine(l.DataDir, ".dispatch-install"));

            var purged = InstallScript.Run(l, ["--uninstall", "--purge"]);
            _output.WriteLine(purged.Output);
            Assert.True(purged.ExitCode == 0, purged.Output);

            // The unrelated files and their directories survive; what the script put there is gone.
            Assert.Equal("someone's site\n", File.ReadAllText(site));
            Assert.Equal("someone's certificate\n", File.ReadAllText(cert));
            Assert.False(File.Exists(l.Config), "the config is still there");
            Assert.False(Directory.Exists(Path.Combine(l.DataDir, "www")), "the welcome site is still there");
            Assert.False(Directory.Exists(l.LogDir), $"{l.LogDir} (created by the install) is still there");
            Assert.False(Directory.Exists(l.LibDir));
            Assert.Contains($"kept {l.DataDir}: the install did not create it", purged.Output, StringComparison.Ordinal);
            Assert.Contains($"kept {l.EtcDir}: the install did not create it", purged.Output, StringComparison.Ordinal);

            // The user (and its group) too: the script did not create it.
            Assert.True(InstallLayout.UserExists(l.User), $"user {l.User} was deleted");
            Assert.Equal(0, Tools.Run("getent", "group", l.User).ExitCode);
            Assert.Contains($"kept user {l.User}: not created by this script", purged.Output, StringComparison.Ordinal);
        }
        finally
        {
            l.Remove();
        }
    }

    [SkippableFact]
    public void Install_refuses_a_non_root_caller_and_a_location_others_can_write()
    {
        _fixture.Installed();
        var l = InstallLayout.Create("refused");
        try
        {
            var asNobody = InstallScript.Run(l, [], asUser: ["--reuid=65534", "--regid=65534", "--clear-groups"]);
            Assert.Equal(77, asNobody.ExitCode);
            Assert.Contains("must run as root", asNobody.Output, StringComparison.Ordinal);

            // A world-writable directory on the way: the master would refuse to run from there.
            var open = Path.Combine(l.Root, "open");
            Directory.CreateDirectory(open);
            File.SetUnixFileMode(open, (UnixFileMode)0b111_111_111);
            var unsafeLib = InstallScript.Run(l, [], new Dictionary<string, string> { ["DISPATCH_LIBDIR"] = Path.Combine(open, "lib/dispatch") });
            Assert.Equal(1, unsafeLib.ExitCode);
            Assert.Contains($"{open} is writable by others than root (mode 777)", unsafeLib.Output, StringComparison.Ordinal);
            Assert.Empty(Directory.EnumerateFileSystemEntries(open));
            Assert.False(InstallLayout.UserExists(l.User));

            // Published binaries missing one executable: refused before anything is installed or created.
            var partial = Path.Combine(l.Root, "partial");
            Directory.CreateDirectory(partial);
            File.Copy(Path.Combine(TestWorld.PublishedDirectory, "Master"), Path.Combine(partial, "Master"));
            var missing = InstallScript.Run(l, [], new Dictionary<string, string> { ["DISPATCH_BINARIES"] = partial });
            Assert.Equal(1, missing.ExitCode);
            Assert.Contains("the published output lacks TlsDispatcher", missing.Output, StringComparison.Ordinal);
            Assert.False(Directory.Exists(l.LibDir));
            Assert.False(InstallLayout.UserExists(l.User));
        }
        finally
        {
            l.Remove();
        }
    }
}
