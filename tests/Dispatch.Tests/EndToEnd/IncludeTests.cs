using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// conf.d: thousands of vhost files as a hosting panel writes them; a reload reads only what changed,
/// a broken or clashing file is rejected with its own file name and JSON path while the rest serves.
/// </summary>
public sealed class IncludeTests : IDisposable
{
    private const int Sites = 2000;
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public IncludeTests(ITestOutputHelper output) => _output = output;

    private static void WriteSite(string confd, string file, string json)
    {
        // As a panel does: write aside, then rename into place (root's, 0644).
        var tmp = Path.Combine(confd, "." + file + ".tmp");
        File.WriteAllText(tmp, json);
        File.SetUnixFileMode(tmp, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        File.Move(tmp, Path.Combine(confd, file), overwrite: true);
    }

    private static string Site(string name, string pool, string root) =>
        new JsonObject { ["vhosts"] = new JsonObject { [name] = new JsonObject { ["pool"] = pool, ["root"] = root } } }.ToJsonString();

    [SkippableFact]
    public void Thousands_of_vhost_files_load_and_a_reload_reads_and_applies_only_what_changed()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("include");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var confd = Path.Combine(dir, "conf.d");
        Directory.CreateDirectory(confd);
        File.SetUnixFileMode(confd, (UnixFileMode)0b111_101_101);
        for (var i = 0; i < Sites; i++)
            WriteSite(confd, $"site-{i:D4}.json", Site($"s{i:D4}.example", i % 2 == 0 ? "a" : "b", i % 2 == 0 ? a : b));
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["include"] = confd;
        config["jailProbe"]!["threads"] = 4;
        var d = _dispatch = DispatchInstance.StartReady(dir, config, _output);
        d.WaitForLine(new Regex($@"Including {Regex.Escape(confd)}: {Sites} files \({Sites} added, 0 changed, 0 removed\)"));
        string Get(string host) => Tools.Curl("-H", $"Host: {host}", $"http://127.0.0.1:{d.HttpPort}/") is var r && r.Status == 200 ? r.Body : $"status {r.Status}";
        Assert.Equal("A", Get("s1234.example"));
        Assert.Equal("B", Get("s1235.example"));
        Assert.Equal("A", Get("a.localhost"));

        // A new file: reachable after the reload, which parsed that one file.
        WriteSite(confd, "site-new.json", Site("new.example", "b", b));
        var m = d.WaitForLine(new Regex($@"Configuration reloaded \(file changed\), version 2: {Sites + 3} vhosts in 2 pools; vhosts added 1, removed 0, changed 0; workers retired for b; include .*: {Sites + 1} files \(1 added, 0 changed, 0 removed\); in (?<ms>\d+) ms"));
        _output.WriteLine($"reload of {Sites + 1} files with one added: {m.Groups["ms"].Value} ms");
        Assert.Equal("B", Get("new.example"));

        // A changed file: only that vhost changes; the workers of the pools it left and joined are replaced (their vhost lists changed).
        WriteSite(confd, "site-0006.json", Site("s0006.example", "b", b));
        d.WaitForLine(new Regex(@"Configuration reloaded \(file changed\), version 3: .*vhosts added 0, removed 0, changed 1; workers retired for a, b; .*\(0 added, 1 changed, 0 removed\)"));
        Assert.Equal("B", Get("s0006.example"));

        // A deleted file: that vhost is gone.
        File.Delete(Path.Combine(confd, "site-0008.json"));
        d.WaitForLine(new Regex(@"Configuration reloaded \(file changed\), version 4: .*vhosts added 0, removed 1, changed 0; workers retired for a; .*\(0 added, 0 changed, 1 removed\)"));
        Assert.Equal("status 404", Get("s0008.example"));

        // A broken file and one that redefines a vhost of the main file: rejected, each error in its own file; all keeps serving.
        WriteSite(confd, "site-bad.json", Site("bad.example", "nosuch", a));
        WriteSite(confd, "site-dup.json", Site("a.localhost", "b", b));
        d.WaitForLine(new Regex($@"Reload \(file changed\) rejected, the last good configuration keeps serving: {Regex.Escape(Path.Combine(confd, "site-bad.json"))}:\d+: vhosts:bad.example:pool: no pool named 'nosuch'"));
        d.WaitForLine(new Regex($@"Reload \(file changed\) rejected, the last good configuration keeps serving: {Regex.Escape(Path.Combine(confd, "site-dup.json"))}:\d+: vhosts:a.localhost: already defined in {Regex.Escape(d.ConfigPath)}"));
        Assert.Equal("A", Get("a.localhost"));
        Assert.Equal("A", Get("s1234.example"));
        Assert.Equal("status 404", Get("bad.example"));

        var check = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", d.ConfigPath);
        Assert.Equal(1, check.ExitCode);
        Assert.Matches(@"site-bad\.json:\d+: vhosts:bad\.example:pool: no pool named 'nosuch'", check.Stderr);
        Assert.Matches(@"site-dup\.json:\d+: vhosts:a\.localhost: already defined in", check.Stderr);

        // A file others could write is not read (the master reads conf.d as root).
        File.Delete(Path.Combine(confd, "site-bad.json"));
        File.Delete(Path.Combine(confd, "site-dup.json"));
        var loose = Path.Combine(confd, "site-0010.json");
        File.SetUnixFileMode(loose, File.GetUnixFileMode(loose) | UnixFileMode.GroupWrite);
        check = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", d.ConfigPath);
        Assert.Equal(1, check.ExitCode);
        Assert.Contains($"{loose}: (root): writable by group or others", check.Stderr, StringComparison.Ordinal);
        _output.WriteLine(check.Stderr);
    }

    public void Dispose() => _dispatch?.Dispose();
}
