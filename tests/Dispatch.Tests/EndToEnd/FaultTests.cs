using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// Faults under load (issue 13): while good clients of another tenant (and, where it makes sense, of the same one)
/// keep requesting, a process is killed, the log disk fills, descriptors run out, a worker stops reading. Each fault
/// must be contained (no other tenant's request fails: counted), logged, and recovered where recovery is possible.
/// Faults land at random moments (the seed is printed); nothing here asserts a duration.
/// </summary>
public sealed partial class FaultTests : IDisposable
{
    private static readonly string[] Tenants = ["a", "b"];
    private readonly ITestOutputHelper _output;
    private readonly List<IDisposable> _cleanup = [];
    private readonly Random _random;

    public FaultTests(ITestOutputHelper output)
    {
        _output = output;
        var seed = Environment.TickCount;
        _random = new Random(seed);
        _output.WriteLine($"random seed {seed}");
    }

    private sealed record Setup(DispatchInstance Dispatch, string Directory, JsonObject Config, int TlsPort, string RootA, string RootB)
    {
        public string Http(string path = "/") => $"http://127.0.0.1:{Dispatch.HttpPort}{path}";

        public string Https(string path = "/") => $"https://localhost:{TlsPort}{path}";
    }

    /// <summary>Two tenants over plain HTTP and TLS (a: openssl engine, pumped by the dispatcher; b: bouncycastle, handed to the worker).</summary>
    private Setup Start(string name, Action<JsonObject, string>? adjust = null)
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory(name);
        var rootA = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var rootB = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var live = TestWorld.InstallSampleCertificates(dir);
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), rootA, rootB);
        var tlsPort = TestWorld.FreePort();
        config["listen"]!.AsArray().Add(new JsonObject { ["endpoint"] = $"127.0.0.1:{tlsPort}", ["protocol"] = "tls" });
        config["jailProbe"]!["threads"] = 4;
        config["vhosts"]!["a.localhost"]!["tls"] = "terminate";
        config["vhosts"]!["a.localhost"]!["engine"] = "openssl";
        config["vhosts"]!["a.localhost"]!["certDir"] = Path.Combine(live, "a.localhost");
        config["vhosts"]!["b.localhost"]!["tls"] = "terminate";
        config["vhosts"]!["b.localhost"]!["certDir"] = Path.Combine(live, "b.localhost");
        adjust?.Invoke(config, dir);
        var d = DispatchInstance.StartReady(dir, config, _output);
        _cleanup.Add(d);
        return new Setup(d, dir, config, tlsPort, rootA, rootB);
    }

    /// <summary>A random moment within the next second.</summary>
    private void RandomMoment() => Thread.Sleep(_random.Next(0, 1000));

    private void Report(params GoodClient[] clients)
    {
        foreach (var c in clients)
            _output.WriteLine(c.ToString());
    }

    [SkippableFact]
    public async Task Kill_9_of_a_worker_and_of_the_dispatcher_at_random_moments_is_contained_logged_and_replaced()
    {
        var s = Start("faults-kill");
        var d = s.Dispatch;
        await using var bKeep = new GoodClient("b keep-alive http", s.Http(), "b.localhost", "B", keepAlive: true);
        await using var bNew = new GoodClient("b new-connection http", s.Http(), "b.localhost", "B", keepAlive: false);
        await using var bTls = new GoodClient("b keep-alive https (handed)", s.Https(), "b.localhost", "B", keepAlive: true);
        await using var aNew = new GoodClient("a new-connection http", s.Http(), "a.localhost", "A", keepAlive: false);
        GoodClient[] all = [bKeep, bNew, bTls, aNew];
        GoodClient[] others = [bKeep, bNew, bTls];
        foreach (var c in all)
            c.WaitForProgress();

        // kill -9 of tenant a's worker, twice: only a's connections on it can be lost; a is served again by a new worker.
        for (var i = 0; i < 2; i++)
        {
            var worker = d.WorkerPid("a", skip: i);
            RandomMoment();
            Assert.Equal(0, Tools.Run("kill", "-KILL", worker.ToString(CultureInfo.InvariantCulture)).ExitCode);
            d.WaitForLine(new Regex($@"Worker {worker} of pool a exited \(signal 9\)"));
            d.WaitForLine(new Regex($@"Worker {worker} of pool a left: "));
            Assert.NotEqual(worker, d.WorkerPid("a", skip: i + 1));
            foreach (var c in all)
                c.WaitForProgress();
        }

        Report(all);
        foreach (var c in others)
            Assert.True(c.FailureCount == 0, c.ToString());
        var aLostToWorkerKills = aNew.FailureCount;

        // kill -9 of the dispatcher, twice: replaced on the same listening sockets (connections queued there wait for
        // the new one); connections already handed to workers do not notice. Only connections the dead dispatcher
        // held at that moment (one per new-connection client at most) can be lost.
        var before = all.ToDictionary(c => c, c => c.FailureCount);
        var dispatcher = d.DispatcherPid;
        for (var i = 0; i < 2; i++)
        {
            RandomMoment();
            Assert.Equal(0, Tools.Run("kill", "-KILL", dispatcher.ToString(CultureInfo.InvariantCulture)).ExitCode);
            var replaced = d.WaitForLine(new Regex($@"Dispatcher {dispatcher} \(signal 9\) replaced by dispatcher (?<pid>\d+)"));
            dispatcher = int.Parse(replaced.Groups["pid"].Value, CultureInfo.InvariantCulture);
            foreach (var c in all)
                c.WaitForProgress();
        }

        Report(all);
        Assert.True(bKeep.FailureCount == before[bKeep], bKeep.ToString());
        Assert.True(bTls.FailureCount == before[bTls], bTls.ToString());
        Assert.True(bNew.FailureCount - before[bNew] <= 2, bNew.ToString());
        Assert.True(aNew.FailureCount - before[aNew] <= 2, aNew.ToString());
        _output.WriteLine($"a's requests lost to the two worker kills: {aLostToWorkerKills}");
    }

    [SkippableFact]
    public async Task Kill_9_of_the_master_takes_the_whole_tree_leaves_nothing_behind_and_a_restarted_master_serves()
    {
        var s = Start("faults-master");
        var d = s.Dispatch;
        List<int> tree;
        await using (var bNew = new GoodClient("b new-connection http", s.Http(), "b.localhost", "B", keepAlive: false))
        await using (var aTls = new GoodClient("a keep-alive https (pumped)", s.Https(), "a.localhost", "A", keepAlive: true))
        await using (var bTls = new GoodClient("b keep-alive https (handed)", s.Https(), "b.localhost", "B", keepAlive: true))
        {
            foreach (var c in new[] { bNew, aTls, bTls })
                c.WaitForProgress();
            d.WorkerPid("a");
            d.WorkerPid("b");
            tree = Tools.Descendants(d.MasterPid);
            _output.WriteLine($"tree of master {d.MasterPid}: {string.Join(' ', tree)}");
            Assert.True(tree.Count >= 3, "a dispatcher and two workers under the master");
            RandomMoment();
            Assert.Equal(0, Tools.Run("kill", "-KILL", d.MasterPid.ToString(CultureInfo.InvariantCulture)).ExitCode);
            Assert.Equal(137, d.WaitForExit());

            // Every process of the tree ends (each child's channel to the master closes), even with clients connected.
            foreach (var pid in tree)
                Assert.True(Tools.Eventually(() => !Alive(pid), TimeSpan.FromSeconds(60)), $"process {pid} ({Command(pid)}) outlived the master");
            Report(bNew, aTls, bTls);
        }

        // Nothing left behind: no process runs from this test's config, the ports are free to bind.
        Assert.Empty(ProcessesMentioning(s.Directory));
        foreach (var port in new[] { d.HttpPort, s.TlsPort })
        {
            using var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, port);
            probe.Start();
        }

        // The same config, started again (its control socket left on disk by the dead master): serves both tenants.
        var again = DispatchInstance.StartReady(s.Directory, s.Config, _output);
        _cleanup.Add(again);
        await using var b2 = new GoodClient("b after restart", s.Https(), "b.localhost", "B", keepAlive: false);
        await using var a2 = new GoodClient("a after restart", s.Http(), "a.localhost", "A", keepAlive: false);
        b2.WaitForProgress();
        a2.WaitForProgress();
        Report(b2, a2);
        Assert.Equal(0, b2.FailureCount + a2.FailureCount);
    }

    [SkippableFact]
    public async Task A_worker_that_stops_reading_its_channel_blocks_nothing_and_is_given_up_killed_and_replaced()
    {
        var s = Start("faults-stuck");
        var d = s.Dispatch;
        await using var bKeep = new GoodClient("b keep-alive http", s.Http(), "b.localhost", "B", keepAlive: true);
        await using var bNew = new GoodClient("b new-connection http", s.Http(), "b.localhost", "B", keepAlive: false);
        await using var bTls = new GoodClient("b new-connection https (handed)", s.Https(), "b.localhost", "B", keepAlive: false);
        // Tenant a, 16 at a time: more than a stopped worker's channel queues, so hand-offs find it full too.
        await using var aNew = new GoodClient("a new-connection http x16", s.Http(), "a.localhost", "A", keepAlive: false, lanes: 16);
        GoodClient[] all = [bKeep, bNew, bTls, aNew];
        GoodClient[] others = [bKeep, bNew, bTls];
        foreach (var c in all)
            c.WaitForProgress();
        var worker = d.WorkerPid("a");

        // SIGSTOP: the worker reads nothing any more (its channel, its connections). The dispatcher keeps serving every
        // other tenant meanwhile, gives the worker up, the master kills it, and a new worker serves tenant a.
        RandomMoment();
        _cleanup.Add(new Signal(worker, "CONT"));
        Assert.Equal(0, Tools.Run("kill", "-STOP", worker.ToString(CultureInfo.InvariantCulture)).ExitCode);
        foreach (var c in others)
            c.WaitForProgress(20);
        d.WaitForLine(new Regex($@"Worker {worker} of pool a given up: (it has not taken the \d+ connection\(s\) waiting in its channel|its channel has been full) for \d+ s"));
        d.WaitForLine(new Regex($@"Worker {worker} of pool a killed: dispatcher {d.DispatcherPid} gave it up"));
        d.WaitForLine(new Regex($@"Worker {worker} of pool a exited \(signal 9\)"));
        Assert.NotEqual(worker, d.WorkerPid("a", skip: 1));
        foreach (var c in all)
            c.WaitForProgress();
        Report(all);
        foreach (var c in others)
            Assert.True(c.FailureCount == 0, c.ToString());
    }

    private sealed class Signal(int pid, string signal) : IDisposable
    {
        public void Dispose() => Tools.Run("kill", $"-{signal}", pid.ToString(CultureInfo.InvariantCulture));
    }

    [SkippableFact]
    public async Task Descriptors_exhausted_in_the_dispatcher_and_in_a_worker_are_contained_logged_and_recovered()
    {
        var s = Start("faults-nofile");
        var d = s.Dispatch;
        await using var bKeep = new GoodClient("b keep-alive http", s.Http(), "b.localhost", "B", keepAlive: true);
        await using var bNew = new GoodClient("b new-connection http", s.Http(), "b.localhost", "B", keepAlive: false);
        await using var bTls = new GoodClient("b new-connection https (handed)", s.Https(), "b.localhost", "B", keepAlive: false);
        await using var aNew = new GoodClient("a new-connection http", s.Http(), "a.localhost", "A", keepAlive: false);
        GoodClient[] all = [bKeep, bNew, bTls, aNew];
        GoodClient[] others = [bKeep, bNew, bTls];
        foreach (var c in all)
            c.WaitForProgress();
        var worker = d.WorkerPid("a");

        // The dispatcher out of descriptors (nofile below what it holds): it accepts nothing; new connections wait in
        // the listening sockets' queues; connections already handed to workers go on. Said once, and recovered.
        var dispatcher = d.DispatcherPid;
        var original = NofileLimit(dispatcher);
        RandomMoment();
        SetNofile(dispatcher, Tools.DescriptorCount(dispatcher) / 2); // well below what it holds: every accept fails
        d.WaitForLine(new Regex(@"accept on \S+ failed: .*open files.*; retrying every 50 ms \(said once until it works again\)"));
        bKeep.WaitForProgress(50);
        SetNofile(dispatcher, original);
        d.WaitForLine(new Regex(@"accept on \S+ works again, after \d+ failed attempts"));
        foreach (var c in all)
            c.WaitForProgress();
        Report(all);
        foreach (var c in all)
            Assert.True(c.FailureCount == 0, c.ToString());
        foreach (var m in Regex.Matches(d.Log, @"accept on (\S+) failed").GroupBy(m => m.Groups[1].Value))
            Assert.True(m.Count() == 1, $"accept on {m.Key}: {m.Count()} failure lines for one episode");

        // Tenant a's worker out of descriptors: the connections handed to it are lost (tenant a only), said once; no
        // other tenant notices. Recovered in place once its limit is back, or, when the .NET runtime itself aborts for
        // want of a descriptor (seen: "Out of memory." and SIGABRT), by a new worker the next connection gets.
        var aBefore = aNew.FailureCount;
        original = NofileLimit(worker);
        RandomMoment();
        SetNofile(worker, Tools.DescriptorCount(worker) / 2);
        d.WaitForLine(new Regex($@"Worker {worker} has no descriptor left \(its nofile limit\): connections handed to it are lost"));
        foreach (var c in others)
            c.WaitForProgress(20);
        if (Alive(worker))
            SetNofile(worker, original);
        var outcome = d.WaitForLine(new Regex($@"Worker {worker} takes connections again; \d+ were lost to its descriptor limit|Worker {worker} of pool a exited \(.*\)"));
        _output.WriteLine($"worker {worker}: {outcome.Value}");
        if (outcome.Value.Contains("exited", StringComparison.Ordinal))
            Assert.NotEqual(worker, d.WorkerPid("a", skip: 1));
        foreach (var c in all)
            c.WaitForProgress();
        Report(all);
        foreach (var c in others)
            Assert.True(c.FailureCount == 0, c.ToString());
        Assert.Single(Regex.Matches(d.Log, $@"Worker {worker} has no descriptor left"));
        _output.WriteLine($"a's requests lost to its worker's descriptor limit: {aNew.FailureCount - aBefore}");
    }

    /// <summary>The soft and hard RLIMIT_NOFILE of <paramref name="pid"/>, as prlimit takes them ("soft:hard").</summary>
    private static string NofileLimit(int pid)
    {
        var line = File.ReadAllLines($"/proc/{pid}/limits").Single(l => l.StartsWith("Max open files", StringComparison.Ordinal));
        var cols = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return $"{cols[0]}:{cols[1]}";
    }

    /// <summary>Lowers the soft limit only (the hard one stays, so it can be restored without CAP_SYS_RESOURCE).</summary>
    private void SetNofile(int pid, int limit) => SetNofile(pid, $"{limit}:{NofileLimit(pid).Split(':')[1]}");

    /// <summary>
    /// prlimit on the process, run as the process's own uid and gid: this container's root has no CAP_SYS_RESOURCE,
    /// which prlimit on another uid's process needs.
    /// </summary>
    private void SetNofile(int pid, string limit)
    {
        var status = Tools.Status($"/proc/{pid}/status");
        var uid = status["Uid"].Split('\t', ' ')[0];
        var gid = status["Gid"].Split('\t', ' ')[0];
        var r = Tools.Run("setpriv", $"--reuid={uid}", $"--regid={gid}", "--clear-groups", "prlimit", "--pid", pid.ToString(CultureInfo.InvariantCulture), $"--nofile={limit}");
        Assert.True(r.ExitCode == 0, $"prlimit {pid} {limit}: {r.Stderr}");
        _output.WriteLine($"nofile of {pid} set to {limit}");
    }

    /// <summary>True while <paramref name="pid"/> runs (a zombie has ended).</summary>
    private static bool Alive(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[stat.LastIndexOf(')') + 2] != 'Z';
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static string Command(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
        }
        catch (IOException)
        {
            return "gone";
        }
    }

    private static List<string> ProcessesMentioning(string text)
    {
        var found = new List<string>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), out var pid) && Alive(pid) && Command(pid).Contains(text, StringComparison.Ordinal))
                found.Add($"{pid}: {Command(pid)}");
        }

        return found;
    }

    public void Dispose()
    {
        for (var i = _cleanup.Count - 1; i >= 0; i--)
            _cleanup[i].Dispose();
    }
}
