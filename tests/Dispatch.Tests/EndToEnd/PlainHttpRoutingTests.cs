using System.Text;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// The skeleton end to end: a real master (root) starts the real dispatcher and workers, which drop
/// to their uids and jail themselves; curl and raw sockets on 127.0.0.1 are the clients.
/// </summary>
public sealed class PlainHttpRoutingTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly List<IDisposable> _cleanup = [];

    public PlainHttpRoutingTests(ITestOutputHelper output) => _output = output;

    private (DispatchInstance Dispatch, string RootA, string RootB) StartTwoTenants(Action<System.Text.Json.Nodes.JsonObject>? adjust = null, string name = "routing")
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory(name);
        var rootA = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string>
        {
            ["index.html"] = "<h1>tenant A home</h1>",
            ["big.txt"] = new string('a', 100_000),
            ["docs/page.txt"] = "a docs page",
        });
        var rootB = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string>
        {
            ["index.html"] = "<h1>tenant B home</h1>",
            ["secret.txt"] = "B-SECRET-DO-NOT-LEAK",
        });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), rootA, rootB);
        adjust?.Invoke(config);
        var dispatch = DispatchInstance.StartReady(dir, config, _output);
        _cleanup.Add(dispatch);
        return (dispatch, rootA, rootB);
    }

    [SkippableFact]
    public void Requests_are_routed_by_Host_to_each_tenants_worker()
    {
        var (d, _, _) = StartTwoTenants();
        var url = $"http://127.0.0.1:{d.HttpPort}/";

        var a = Tools.Curl("-H", "Host: a.localhost", url);
        Assert.Equal(200, a.Status);
        Assert.Contains("tenant A home", a.Body, StringComparison.Ordinal);

        var b = Tools.Curl("-H", "Host: b.localhost", url);
        Assert.Equal(200, b.Status);
        Assert.Contains("tenant B home", b.Body, StringComparison.Ordinal);

        var alias = Tools.Curl("-H", "Host: WWW.A.localhost.:" + d.HttpPort, url + "docs/page.txt");
        Assert.Equal(200, alias.Status);
        Assert.Equal("a docs page", alias.Body);

        var unknown = Tools.Curl("-H", "Host: nobody.example", url);
        Assert.Equal(404, unknown.Status);
        Assert.Contains("No site named 'nobody.example'", unknown.Body, StringComparison.Ordinal);

        // Each pool got its own worker, under its own uid.
        Assert.NotEqual(d.WorkerPid("a"), d.WorkerPid("b"));
    }

    [SkippableFact]
    public void Dispatcher_runs_as_its_own_uid_with_no_capabilities_not_dumpable_and_jailed_on_every_thread()
    {
        var extra = Path.Combine(TestWorld.RepoRoot, "certs-sample", "archive", "a.localhost", "privkey1.pem");
        var (d, _, _) = StartTwoTenants(c => c["jailProbe"]!["paths"] = new System.Text.Json.Nodes.JsonArray(extra), "dispatcher-jail");
        var pid = d.DispatcherPid;

        var status = Tools.Status($"/proc/{pid}/status");
        Assert.Equal("10000\t10000\t10000\t10000", status["Uid"]);
        Assert.Equal("10000\t10000\t10000\t10000", status["Gid"]);
        Assert.Equal(string.Empty, status["Groups"]);
        foreach (var cap in new[] { "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb" })
            Assert.Equal("0000000000000000", status[cap]);

        // Every thread: no_new_privs (Landlock was applied before the exec, so every thread inherits it).
        var threads = Directory.GetDirectories($"/proc/{pid}/task");
        Assert.True(threads.Length > 3, $"expected a multi-threaded runtime, saw {threads.Length} threads");
        foreach (var t in threads)
        {
            var ts = Tools.Status(Path.Combine(t, "status"));
            Assert.Equal("1", ts["NoNewPrivs"]);
            Assert.Equal("0000000000000000", ts["CapEff"]);
        }

        // Not dumpable: the kernel makes its /proc files root's, though the process runs as 10000.
        Assert.Equal(0u, Owner($"/proc/{pid}/status"));

        // Its own proof, run on 32 threads and from a child: /etc/passwd, the config, tenants' roots,
        // and a certificate key given by the test — none opened.
        var proof = d.WaitForLine(new Regex($@"Jail of Dispatcher {pid} \(dispatcher\) holds: uid 10000 gid 10000.*")).Value;
        foreach (var path in new[] { "/etc/passwd", d.ConfigPath, extra })
            Assert.Matches(new Regex($@"{Regex.Escape(path)} \[0/32 threads opened; child (could not start: posix_spawn\(/bin/cat\) failed: Permission denied|denied)"), proof);
    }

    [SkippableFact]
    public void Workers_run_as_their_tenant_and_cannot_read_the_other_tenants_files()
    {
        var (d, rootA, rootB) = StartTwoTenants(name: "tenant-isolation");
        // Tenant A plants a symlink to B's secret in its own tree: the worker must not follow it out.
        var link = Path.Combine(rootA, "steal.txt");
        File.CreateSymbolicLink(link, Path.Combine(rootB, "secret.txt"));
        TestWorld.Chown(link, TestWorld.TenantA, recursive: false);
        var url = $"http://127.0.0.1:{d.HttpPort}/";

        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", url).Status);
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", url).Status);
        var workerA = d.WorkerPid("a");
        var workerB = d.WorkerPid("b");

        var sa = Tools.Status($"/proc/{workerA}/status");
        Assert.Equal("10001\t10001\t10001\t10001", sa["Uid"]);
        Assert.Equal("10001\t10001\t10001\t10001", sa["Gid"]);
        Assert.Equal("0000000000000000", sa["CapEff"]);
        Assert.Equal("0000000000000000", sa["CapBnd"]);
        var sb = Tools.Status($"/proc/{workerB}/status");
        Assert.Equal("10002\t10002\t10002\t10002", sb["Uid"]);
        foreach (var t in Directory.GetDirectories($"/proc/{workerA}/task"))
            Assert.Equal("1", Tools.Status(Path.Combine(t, "status"))["NoNewPrivs"]);
        Assert.Equal(0u, Owner($"/proc/{workerA}/status"));

        var steal = Tools.Curl("-H", "Host: a.localhost", url + "steal.txt");
        Assert.NotEqual(200, steal.Status);
        Assert.DoesNotContain("B-SECRET", steal.Body, StringComparison.Ordinal);

        // Worker A's own proof: B's root, /etc/passwd and the config denied on 32 threads and from a child.
        var proof = d.WaitForLine(new Regex($@"Jail of Worker {workerA} \(a\) holds: uid 10001 gid 10001.*")).Value;
        foreach (var path in new[] { "/etc/passwd", d.ConfigPath, rootB })
            Assert.Contains($"{path} [0/32 threads opened; child", proof, StringComparison.Ordinal);
        Assert.DoesNotContain(rootA + " [", proof, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_worker_holds_no_descriptor_but_its_own()
    {
        var (d, rootA, _) = StartTwoTenants(name: "worker-fds");
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
        var worker = d.WorkerPid("a");
        var fds = Tools.Descriptors(worker);
        _output.WriteLine(string.Join('\n', fds.Select(kv => $"{kv.Key} -> {kv.Value}")));

        Assert.Equal("/dev/null", fds[0]);
        Assert.Equal("/dev/null", fds[1]);
        Assert.StartsWith("socket:[", fds[2], StringComparison.Ordinal); // stderr, read by the master
        Assert.StartsWith("socket:[", fds[3], StringComparison.Ordinal); // the channel to the master

        // No socket shared with the master or the dispatcher (listening sockets, their channels).
        static HashSet<string> Sockets(int pid) => Tools.Descriptors(pid).Values.Where(v => v.StartsWith("socket:", StringComparison.Ordinal)).ToHashSet();
        var mine = Sockets(worker);
        Assert.Empty(mine.Intersect(Sockets(d.MasterPid)));
        Assert.Empty(mine.Intersect(Sockets(d.DispatcherPid)));

        // No regular file outside the runtime and the binaries: no config, no log, nothing of root's. Files of its own
        // root that it just served are held by its open-file cache for a second or two, then closed.
        var dotnetRoot = Path.GetFullPath(Path.Combine(System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", ".."));
        var ownRoot = rootA + "/";
        foreach (var target in fds.Values.Where(v => v.StartsWith('/')))
        {
            Assert.True(
                target is "/dev/null" or "/dev/urandom" || target.StartsWith("/memfd:", StringComparison.Ordinal) || target.StartsWith(dotnetRoot, StringComparison.Ordinal) || target.StartsWith(TestWorld.AppDirectory, StringComparison.Ordinal) || target.StartsWith(ownRoot, StringComparison.Ordinal),
                $"worker holds an unexpected file: {target}");
        }

        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (Tools.Descriptors(worker).Values.Any(v => v.StartsWith(ownRoot, StringComparison.Ordinal)) && DateTime.UtcNow < deadline)
            Thread.Sleep(100);
        Assert.DoesNotContain(Tools.Descriptors(worker).Values, v => v.StartsWith(ownRoot, StringComparison.Ordinal));
    }

    [SkippableFact]
    public async Task Malformed_oversized_and_stalled_heads_are_refused_without_disturbing_a_good_request_or_leaking()
    {
        var (d, _, _) = StartTwoTenants(name: "bad-heads");
        var url = $"http://127.0.0.1:{d.HttpPort}/";
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", url).Status); // workers warm
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", url).Status);
        // Warm the runtime too (thread pool, timers, epoll engines grow on first use), then count.
        await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => Tools.RawExchangeAsync(d.HttpPort, Encoding.ASCII.GetBytes("\x01\r\n\r\n"))));
        static Dictionary<int, string> Sockets(int pid) => Tools.Descriptors(pid).Where(kv => kv.Value.StartsWith("socket:", StringComparison.Ordinal)).ToDictionary();
        var before = Sockets(d.DispatcherPid);

        var random = new byte[3000];
        new Random(42).NextBytes(random);
        random[0] = 0x16; // looks like TLS: not HTTP
        var cases = new (string Name, byte[] Bytes, bool HalfClose, string Expect)[]
        {
            ("random bytes", random, false, "HTTP/1.1 400"),
            ("oversized head", Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: a.localhost\r\nX-Pad: " + new string('x', 9000) + "\r\n\r\n"), false, "HTTP/1.1 431"),
            ("stalled head", Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: a.loc"), false, "HTTP/1.1 408"),
            ("two Host headers", Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n"), false, "HTTP/1.1 400"),
            ("bare LF", Encoding.ASCII.GetBytes("GET / HTTP/1.1\nHost: a.localhost\n\n"), false, "HTTP/1.1 400"),
            ("no Host", Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), false, "HTTP/1.1 400"),
            ("obs-fold", Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: a.localhost\r\n X: y\r\n\r\n"), false, "HTTP/1.1 400"),
            ("HTTP/2 version", Encoding.ASCII.GetBytes("GET / HTTP/2.0\r\nHost: a.localhost\r\n\r\n"), false, "HTTP/1.1 505"),
            ("truncated then closed", Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHo"), true, "HTTP/1.1 400"),
        };

        var bad = cases.Select(c => Tools.RawExchangeAsync(d.HttpPort, c.Bytes, c.HalfClose)).ToList();
        // While they are open (the stalled one for its whole timeout), good requests are served.
        for (var i = 0; i < 5; i++)
        {
            var good = Tools.Curl("-H", "Host: b.localhost", url);
            Assert.Equal(200, good.Status);
        }

        var answers = await Task.WhenAll(bad);
        for (var i = 0; i < cases.Length; i++)
            Assert.True(answers[i].StartsWith(cases[i].Expect, StringComparison.Ordinal), $"{cases[i].Name}: expected {cases[i].Expect}, got '{answers[i].Split('\n')[0]}'");

        // 200 concurrent garbage connections at once: all refused, and the dispatcher's descriptors come back.
        var burst = Enumerable.Range(0, 200).Select(_ => Tools.RawExchangeAsync(d.HttpPort, Encoding.ASCII.GetBytes("\x01\x02garbage\r\n\r\n"))).ToList();
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", url).Status);
        Assert.All(await Task.WhenAll(burst), a => Assert.StartsWith("HTTP/1.1 400", a, StringComparison.Ordinal));
        Assert.True(
            Tools.Eventually(() => Sockets(d.DispatcherPid).Count <= before.Count),
            $"dispatcher sockets: {before.Count} before, now also: {string.Join(", ", Sockets(d.DispatcherPid).Where(kv => !before.ContainsKey(kv.Key)).Select(kv => $"{kv.Key}->{kv.Value}"))}");
    }

    [SkippableFact]
    public async Task A_request_for_another_pool_on_a_kept_alive_connection_gets_421_and_the_connection_closes()
    {
        var (d, _, _) = StartTwoTenants(name: "misdirected");
        var pipelined = Encoding.ASCII.GetBytes(
            "GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\nGET / HTTP/1.1\r\nHost: b.localhost\r\n\r\nGET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        var answer = await Tools.RawExchangeAsync(d.HttpPort, pipelined);
        var statuses = Regex.Matches(answer, @"HTTP/1\.1 (\d{3})").Select(m => m.Groups[1].Value).ToList();
        Assert.Equal(["200", "421"], statuses); // closed after the 421: the third request is not answered
        Assert.Contains("tenant A home", answer, StringComparison.Ordinal);
        Assert.DoesNotContain("tenant B home", answer, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Static_files_honour_ranges_validators_and_stay_inside_the_root()
    {
        var (d, _, _) = StartTwoTenants(name: "static");
        var url = $"http://127.0.0.1:{d.HttpPort}/";
        var host = new[] { "-H", "Host: a.localhost" };

        var range = Tools.Curl([.. host, "-r", "10-19", url + "big.txt"]);
        Assert.Equal(206, range.Status);
        Assert.Equal(new string('a', 10), range.Body);
        Assert.Contains("Content-Range: bytes 10-19/100000", range.Headers, StringComparison.OrdinalIgnoreCase);

        var full = Tools.Curl([.. host, url + "big.txt"]);
        var etag = Regex.Match(full.Headers, "ETag: (\"[^\"]+\")", RegexOptions.IgnoreCase).Groups[1].Value;
        Assert.NotEmpty(etag);
        Assert.Equal(304, Tools.Curl([.. host, "-H", $"If-None-Match: {etag}", url + "big.txt"]).Status);
        var modified = Regex.Match(full.Headers, "Last-Modified: ([^\r\n]+)", RegexOptions.IgnoreCase).Groups[1].Value;
        Assert.Equal(304, Tools.Curl([.. host, "-H", $"If-Modified-Since: {modified}", url + "big.txt"]).Status);

        var head = Tools.Curl([.. host, "-I", url + "big.txt"]);
        Assert.Equal(200, head.Status);
        Assert.Contains("Content-Length: 100000", head.Headers, StringComparison.OrdinalIgnoreCase);

        Assert.Equal(404, Tools.Curl([.. host, url + "docs/"]).Status); // no listing unless configured
        foreach (var trick in new[] { "../b/secret.txt", "%2e%2e/b/secret.txt", "docs/..%2f..%2fb/secret.txt", "..%252fb/secret.txt" })
        {
            var r = Tools.Curl([.. host, "--path-as-is", url + trick]);
            Assert.NotEqual(200, r.Status);
            Assert.DoesNotContain("B-SECRET", r.Body, StringComparison.Ordinal);
        }
    }

    private static uint Owner(string path)
    {
        var r = Tools.Run("stat", "-c", "%u", path);
        return uint.Parse(r.Stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }

    public void Dispose()
    {
        foreach (var c in _cleanup)
            c.Dispose();
    }
}
