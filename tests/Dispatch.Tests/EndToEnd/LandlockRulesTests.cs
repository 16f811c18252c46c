using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Dispatch.Platform.Confinement;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>A pool's configurable Landlock rules: <c>landlock.write</c> directories and <c>landlock.connectTcp</c> ports, as its CGI scripts see them.</summary>
public sealed class LandlockRulesTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly List<Socket> _listeners = [];
    private DispatchInstance? _dispatch;

    public LandlockRulesTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void A_CGI_script_writes_only_beneath_its_pools_write_paths_and_connects_only_to_listed_or_proxied_ports()
    {
        TestWorld.RequireRoot();
        Skip.If(Landlock.AbiVersion() < Landlock.NetworkAbi, $"LANDLOCK NETWORK TEST SKIPPED: this kernel's Landlock ABI is {Landlock.AbiVersion()}; TCP rules need ABI {Landlock.NetworkAbi}");
        Skip.IfNot(File.Exists("/bin/bash"), "LANDLOCK NETWORK TEST SKIPPED: /bin/bash (for /dev/tcp) is not installed");
        var dir = TestWorld.NewTestDirectory("landlock-rules");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var uploads = TestWorld.NewTenantTree(dir, "uploads-a", TestWorld.TenantA, new Dictionary<string, string>());
        var listed = Listen();
        var proxied = Listen();
        var unlisted = Listen();
        var tmpProbe = $"/tmp/dispatch-landlock-{Guid.NewGuid():N}";
        var script = $$"""
            #!/bin/sh
            printf 'Content-Type: text/plain\r\n\r\n'
            UP={{uploads}}
            echo data > "$UP/f.txt" 2>/dev/null && echo upload-wrote || echo upload-denied
            mkdir "$UP/d" 2>/dev/null && mv "$UP/f.txt" "$UP/d/g.txt" 2>/dev/null && cat "$UP/d/g.txt" && echo upload-renamed || echo upload-rename-denied
            printf '#!/bin/sh\necho ran\n' > "$UP/x.sh" && chmod 700 "$UP/x.sh" && "$UP/x.sh" 2>/dev/null && echo upload-EXECUTED || echo upload-noexec
            rm -r "$UP/d" "$UP/x.sh" 2>/dev/null && echo upload-removed || echo upload-remove-denied
            echo x > {{a}}/new.html 2>/dev/null && echo docroot-WROTE || echo docroot-denied
            echo x > {{tmpProbe}} 2>/dev/null && echo tmp-WROTE || echo tmp-denied
            for port in {{listed}} {{proxied}} {{unlisted}}; do
              /bin/bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && echo "port-$port-connected" || echo "port-$port-denied"
            done
            """;
        var cgi = TestWorld.NewTenantTree(dir, "cgi-a", TestWorld.TenantA, new Dictionary<string, string> { ["rules.sh"] = script.ReplaceLineEndings("\n") });
        File.SetUnixFileMode(Path.Combine(cgi, "rules.sh"), UnixFileMode.UserRead | UnixFileMode.UserExecute);

        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["pools"]!["a"]!["landlock"] = new JsonObject { ["write"] = new JsonArray(uploads), ["connectTcp"] = new JsonArray(listed) };
        config["vhosts"]!["a.localhost"]!["cgi"] = new JsonObject { ["/cgi-bin/"] = cgi };
        config["vhosts"]!["a.localhost"]!["proxy"] = new JsonObject { ["/app/"] = $"http://127.0.0.1:{proxied}" };
        // The config file lives outside the tenants' trees (a write path inside its directory is refused).
        var conf = Path.Combine(dir, "conf");
        Directory.CreateDirectory(conf);
        _dispatch = DispatchInstance.StartReady(conf, config, _output);

        var r = Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/cgi-bin/rules.sh");
        _output.WriteLine(r.Body);
        Assert.Equal(200, r.Status);
        string[] expected =
        [
            "upload-wrote", "data", "upload-renamed", "upload-noexec", "upload-removed", "docroot-denied", "tmp-denied",
            $"port-{listed}-connected", $"port-{proxied}-connected", $"port-{unlisted}-denied",
        ];
        Assert.Equal(expected, r.Body.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.False(File.Exists(tmpProbe));
        Assert.False(File.Exists(Path.Combine(a, "new.html")));
        Assert.Empty(Directory.GetFileSystemEntries(uploads));
    }

    [SkippableFact]
    public void Bad_write_paths_and_ports_are_refused_with_the_pool_and_field()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("landlock-config");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var (conf, inConf, rootOwned, open, good, insideGood) = WritePathCandidates(dir);
        var notB = TestWorld.NewTenantTree(dir, "not-b", TestWorld.TenantA, new Dictionary<string, string>());

        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["pools"]!["a"]!["landlock"] = new JsonObject
        {
            ["write"] = new JsonArray("relative/dir", Path.Combine(dir, "missing"), "/etc", "/usr/lib", "/", b, Path.Combine(a, "..", "b"), inConf, rootOwned, open, good),
            ["connectTcp"] = new JsonArray(0, 70000, "x", 5432),
            ["net"] = new JsonArray(),
        };
        config["pools"]!["b"]!["landlock"] = new JsonObject { ["write"] = new JsonArray(insideGood, notB), ["connectTcp"] = 80 };
        var file = Path.Combine(conf, "dispatch.json");
        File.WriteAllText(file, config.ToJsonString());
        var r = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", file);
        _output.WriteLine(r.Stderr);
        Assert.Equal(1, r.ExitCode);
        string[] errors =
        [
            "pools:a:landlock:write:0: 'relative/dir' is not an absolute path",
            $"pools:a:landlock:write:1: directory '{Path.Combine(dir, "missing")}' does not exist",
            "pools:a:landlock:write:2: /etc is /etc (a system directory)",
            "pools:a:landlock:write:3: /usr/lib is inside /usr (a system directory)",
            "pools:a:landlock:write:4: / contains /etc (a system directory)",
            $"pools:a:landlock:write:5: {b} is {b}, the root of vhost b.localhost (pool b)",
            $"pools:a:landlock:write:6: '{Path.Combine(a, "..", "b")}' contains '.' or '..' segments",
            $"pools:a:landlock:write:7: {inConf} is inside {conf} (the config file's directory)",
            $"pools:a:landlock:write:8: {rootOwned} is owned by uid 0, not the pool's uid 10001",
            $"pools:a:landlock:write:9: {open} is writable by everyone (mode 777)",
            $"pools:a:landlock:write:10: {good} contains {insideGood}, a write path of pool b",
            $"pools:b:landlock:write:0: {insideGood} is inside {good}, a write path of pool a",
            $"pools:b:landlock:write:1: {notB} is owned by uid 10001, not the pool's uid 10002",
            "pools:a:landlock:connectTcp:0: '0' is not a TCP port (1-65535)",
            "pools:a:landlock:connectTcp:1: '70000' is not a TCP port (1-65535)",
            "pools:a:landlock:connectTcp:2: 'x' is not a TCP port (1-65535)",
            "pools:a:landlock:net: unknown setting (expected one of: read, exec, write, connectTcp)",
            "pools:b:landlock:connectTcp: a list of TCP ports such as [5432, 6379]",
        ];
        foreach (var e in errors)
            Assert.Contains(e, r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("connectTcp:3", r.Stderr, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Chroot_writable_paths_get_the_same_checks_and_no_write_path_may_reach_the_pools_own_CGI_or_exec_paths()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("landlock-chroot-w");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var cgi = TestWorld.NewTenantTree(dir, "cgi-a", TestWorld.TenantA, new Dictionary<string, string>());
        var cgiSub = TestWorld.NewTenantTree(cgi, "sub", TestWorld.TenantA, new Dictionary<string, string>());
        var tools = TestWorld.NewTenantTree(dir, "tools-a", TestWorld.TenantA, new Dictionary<string, string>());
        var exec = TestWorld.NewTenantTree(tools, "bin", TestWorld.TenantA, new Dictionary<string, string>());
        var (conf, inConf, rootOwned, open, good, insideGood) = WritePathCandidates(dir);
        var goodFile = Path.Combine(good, "state.db");
        File.WriteAllText(goodFile, string.Empty);
        TestWorld.Chown(goodFile, TestWorld.TenantA, recursive: false);

        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["vhosts"]!["a.localhost"]!["cgi"] = new JsonObject { ["/cgi-bin/"] = cgi };
        config["pools"]!["a"]!["landlock"] = new JsonObject { ["write"] = new JsonArray(cgi, tools, a), ["exec"] = new JsonArray("/usr/bin", exec) };
        config["pools"]!["a"]!["chroot"] = new JsonObject { ["writable"] = new JsonArray(b, inConf, rootOwned, open, cgiSub, "/var/log", good, goodFile) };
        config["pools"]!["b"]!["chroot"] = new JsonObject { ["writable"] = new JsonArray(insideGood) };
        var file = Path.Combine(conf, "dispatch.json");
        File.WriteAllText(file, config.ToJsonString());
        var r = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", file);
        _output.WriteLine(r.Stderr);
        Assert.Equal(1, r.ExitCode);
        string[] errors =
        [
            $"pools:a:landlock:write:0: {cgi} is {cgi}, a CGI directory of vhost a.localhost: a file written there could then be executed",
            $"pools:a:landlock:write:1: {tools} contains {exec}, a landlock.exec path of this pool: a file written there could then be executed",
            $"pools:a:chroot:writable:0: {b} is {b}, the root of vhost b.localhost (pool b)",
            $"pools:a:chroot:writable:1: {inConf} is inside {conf} (the config file's directory)",
            $"pools:a:chroot:writable:2: {rootOwned} is owned by uid 0, not the pool's uid 10001",
            $"pools:a:chroot:writable:3: {open} is writable by everyone (mode 777)",
            $"pools:a:chroot:writable:4: {cgiSub} is inside {cgi}, a CGI directory of vhost a.localhost: a file written there could then be executed",
            "pools:a:chroot:writable:5: /var/log is /var/log (a system directory)",
            $"pools:a:chroot:writable:6: {good} contains {insideGood}, a write path of pool b",
            $"pools:b:chroot:writable:0: {insideGood} is inside {good}, a write path of pool a",
        ];
        foreach (var e in errors)
            Assert.Contains(e, r.Stderr, StringComparison.Ordinal);
        // The pool's own document root may be a write path (its scripts may then change the site); a pool-owned file may be bound writable.
        Assert.DoesNotContain("pools:a:landlock:write:2", r.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("pools:a:chroot:writable:7", r.Stderr, StringComparison.Ordinal);
    }

    private int Listen()
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        s.Listen(16);
        _listeners.Add(s);
        return ((IPEndPoint)s.LocalEndPoint!).Port;
    }

    public void Dispose()
    {
        _dispatch?.Dispose();
        foreach (var s in _listeners)
            s.Dispose();
    }

    /// <summary>
    /// Directories a write path may or may not name: one of pool a's inside a "conf" directory, a root-owned one,
    /// a world-writable one of a's, a good one of a's, and one of b's inside that good one.
    /// </summary>
    private static (string Conf, string InConf, string RootOwned, string Open, string Good, string InsideGood) WritePathCandidates(string dir)
    {
        var conf = Path.Combine(dir, "conf");
        Directory.CreateDirectory(conf);
        var inConf = TestWorld.NewTenantTree(conf, "cache-a", TestWorld.TenantA, new Dictionary<string, string>());
        var rootOwned = Path.Combine(dir, "root-owned");
        Directory.CreateDirectory(rootOwned);
        var open = TestWorld.NewTenantTree(dir, "open-a", TestWorld.TenantA, new Dictionary<string, string>());
        File.SetUnixFileMode(open, (UnixFileMode)0b111_111_111);
        var good = TestWorld.NewTenantTree(dir, "good-a", TestWorld.TenantA, new Dictionary<string, string>());
        var insideGood = TestWorld.NewTenantTree(good, "b-inside", TestWorld.TenantB, new Dictionary<string, string>());
        return (conf, inConf, rootOwned, open, good, insideGood);
    }
}
