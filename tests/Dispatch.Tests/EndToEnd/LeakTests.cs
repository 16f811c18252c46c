using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// The CI-sized leak check (bench/leaks.sh runs the same mix 100,000 times): a few thousand mixed connections — plain
/// HTTP, TLS 1.3 and 1.2 handed to the worker, TLS pumped by the dispatcher, h2, passthrough, and bad ones (malformed
/// ClientHellos, garbage and truncated request heads, resets mid-handshake and mid-head) — from bench/leaks.py
/// (Python's socket and ssl, i.e. OpenSSL). Afterwards every Dispatch process holds exactly as many descriptors as
/// before: one leaked descriptor anywhere fails it.
/// </summary>
public sealed class LeakTests : IDisposable
{
    private const int Connections = 3000;
    private static readonly string[] Pools = ["a", "b", "c"];
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public LeakTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void After_thousands_of_mixed_good_and_bad_connections_every_process_holds_exactly_its_baseline_descriptors()
    {
        var site = TwoTenantSite.Create("leaks");
        var (config, tlsPort) = (site.Config, site.TlsPort);
        var rootC = TestWorld.NewTenantTree(site.Directory, "c", 10003, new Dictionary<string, string> { ["index.html"] = "C" });
        // Tenant c's own certbot tree (passthrough: only its worker reads the key).
        var tenantCerts = site.TenantCertificates("c-certs", 10003);

        config["jailProbe"]!["threads"] = 4;
        // leaks.py's malformed ClientHellos declare a random length; now and then one within the dispatcher's buffer but
        // beyond what was sent (seen in two runs of three), and that connection ends only at the handshake timeout, which
        // the mix waits for: 10 s by default, 4 s here. A good client sends its ClientHello at once (as a plain one sends
        // its head within the sample config's 2 s headerTimeout).
        config["dispatcher"]!["handshakeTimeout"] = "4s";
        config["pools"]!["c"] = new JsonObject { ["user"] = "10003", ["group"] = "10003" };
        foreach (var pool in Pools)
            config["pools"]![pool]!["idleTimeout"] = "10m"; // no worker is let go (and its channel closed) meanwhile
        site.Terminate("a", engine: "openssl");
        site.Terminate("b");
        config["vhosts"]!["c.localhost"] = new JsonObject { ["pool"] = "c", ["root"] = rootC, ["tls"] = "passthrough", ["certDir"] = Path.Combine(tenantCerts, "live", "c.localhost") };
        _dispatch = site.StartReady(_output);
        var d = _dispatch;

        // Warm every path (each kind twice), so every worker and channel exists; then the baseline.
        Mix(d.HttpPort, tlsPort, 22);
        foreach (var pool in Pools)
            d.WorkerPid(pool);
        var processes = Tools.Descendants(d.MasterPid).Append(d.MasterPid).Order().ToList();
        Assert.True(Tools.Eventually(() => Stable(processes)), "descriptor counts settle after the warm-up");
        var baseline = processes.ToDictionary(p => p, Counted);
        var tcpBefore = processes.ToDictionary(p => p, TcpSockets);
        _output.WriteLine("baseline: " + string.Join(", ", baseline.Select(kv => $"{Name(kv.Key)} {kv.Value}")));

        var summary = Mix(d.HttpPort, tlsPort, Connections);
        _output.WriteLine(summary);

        // The same processes (none died, none was added) and, once the last connections are closed, no more descriptors
        // than before and no TCP socket but those held before (the listeners, the master's): a client connection, a
        // socketpair or a file kept anywhere fails this. Not counted: assemblies (.dll), which the runtime maps once, on
        // the first use of a code path (a rarely taken one may come during the run), and keeps for the process's life.
        // Exactly the baseline is expected; one fewer has been seen (a warm-up descriptor still closing at the baseline).
        Assert.Equal(processes, Tools.Descendants(d.MasterPid).Append(d.MasterPid).Order().ToList());
        var grown = new List<string>();
        foreach (var pid in processes)
        {
            if (!Tools.Eventually(() => Counted(pid) <= baseline[pid] && TcpSockets(pid).IsSubsetOf(tcpBefore[pid]), TimeSpan.FromSeconds(60)))
                grown.Add($"{Name(pid)} ({UnixSockets(pid)}) holds {Counted(pid)} descriptors (not counting assemblies), {baseline[pid]} before {Connections} connections, and {TcpSockets(pid).Except(tcpBefore[pid]).Count()} TCP sockets it did not hold before: {string.Join(' ', Tools.Descriptors(pid).Values.Where(v => !v.EndsWith(".dll", StringComparison.Ordinal)).GroupBy(v => v.Split(':')[0]).Select(g => $"{g.Key}×{g.Count()}"))}");
        }

        _output.WriteLine("after: " + string.Join(", ", processes.Select(p => $"{Name(p)} {Counted(p)}")));
        Assert.True(grown.Count == 0, string.Join('\n', grown));
    }

    /// <summary>
    /// A dispatcher logging at Warning writes nothing until something goes wrong — in the flood bench, in the middle of a
    /// flood. Its first line must open no descriptor: through .NET's console it opened four (stdout and stderr
    /// duplicated, and the pipe of the console's signal handling), kept for the process's life, so a flood's
    /// descriptors never came back to the baseline (docs/floods.md, "The descriptors after a flood").
    /// </summary>
    [SkippableFact]
    public async Task A_dispatchers_first_log_line_opens_no_descriptor()
    {
        var site = TwoTenantSite.Create("first-log-line");
        var config = site.Config;
        config["log"] = new JsonObject { ["level"] = "Warning" };
        config["dispatcher"]!["limits"] = new JsonObject { ["perAddress"] = new JsonObject { ["connections"] = 1 } };
        _dispatch = site.StartReady(_output);
        var d = _dispatch;
        var served = Tools.Run("curl", "-sS", "-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/");
        Assert.True(served.ExitCode == 0, served.Stderr);
        var pid = d.DispatcherPid;
        Assert.True(Tools.Eventually(() => Stable([pid])), "descriptor counts settle after the first request");
        var before = Counted(pid);

        // Over the per-address limit of 1: the second connection from 127.0.0.2 gets 429, and the refusal is logged.
        using (var held = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        using (var refused = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            held.Bind(new IPEndPoint(IPAddress.Parse("127.0.0.2"), 0));
            await held.ConnectAsync(IPAddress.Loopback, d.HttpPort);
            refused.Bind(new IPEndPoint(IPAddress.Parse("127.0.0.2"), 0));
            await refused.ConnectAsync(IPAddress.Loopback, d.HttpPort);
            await refused.SendAsync("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n"u8.ToArray(), SocketFlags.None);
            var answer = new byte[64];
            var n = await refused.ReceiveAsync(answer, SocketFlags.None);
            Assert.StartsWith("HTTP/1.1 429", System.Text.Encoding.ASCII.GetString(answer, 0, n), StringComparison.Ordinal);
            d.WaitForLine(new Regex(@"\(dispatcher\): Refused \d+ connection\(s\) over the client limits"));
        }

        Assert.True(
            Tools.Eventually(() => Counted(pid) <= before, TimeSpan.FromSeconds(10)),
            $"the dispatcher held {before} descriptors before its first log line, {Counted(pid)} after it: " +
            string.Join(' ', Tools.Descriptors(pid).Values.Where(v => !v.EndsWith(".dll", StringComparison.Ordinal))));
    }

    /// <summary>The process's descriptors but assemblies.</summary>
    private static int Counted(int pid) => Tools.Descriptors(pid).Values.Count(v => !v.EndsWith(".dll", StringComparison.Ordinal));

    /// <summary>The process's Unix sockets as ss sees them (for the failure message).</summary>
    private static string UnixSockets(int pid) =>
        string.Join(" | ", Tools.Run("ss", "-xpn").Stdout.Split('\n').Where(l => l.Contains($"pid={pid},", StringComparison.Ordinal)).Select(l => string.Join(' ', l.Split(' ', StringSplitOptions.RemoveEmptyEntries).Take(8))));

    /// <summary>The TCP sockets among the process's descriptors ("socket:[inode]").</summary>
    private static HashSet<string> TcpSockets(int pid)
    {
        var tcp = Tools.TcpSocketInodes();
        return [.. Tools.Descriptors(pid).Values.Where(tcp.Contains)];
    }

    /// <summary>Runs bench/leaks.py; every good connection must have been served.</summary>
    private static string Mix(int httpPort, int tlsPort, int count)
    {
        // The Debian interpreter run-tests.sh installs (as ResetClientTests: not a version manager's shim found on PATH).
        var r = Tools.Run(
            "/usr/bin/python3",
            Path.Combine(TestWorld.RepoRoot, "bench", "leaks.py"),
            "--http", httpPort.ToString(CultureInfo.InvariantCulture),
            "--tls", tlsPort.ToString(CultureInfo.InvariantCulture),
            "--ca", TestWorld.CaPath,
            "--count", count.ToString(CultureInfo.InvariantCulture),
            "--concurrency", "16",
            "--plain-host", "b.localhost",
            "--handed-host", "b.localhost",
            "--pumped-host", "a.localhost",
            "--passthrough-host", "c.localhost");
        Assert.True(r.ExitCode == 0, $"leaks.py ({r.ExitCode}): {r.Stdout} {r.Stderr}");
        var kinds = JsonDocument.Parse(r.Stdout).RootElement.GetProperty("kinds");
        Assert.Equal(11, kinds.EnumerateObject().Count());
        return r.Stdout.Trim();
    }

    private static bool Stable(List<int> pids)
    {
        var first = pids.Select(Tools.DescriptorCount).ToList();
        Thread.Sleep(500);
        return first.SequenceEqual(pids.Select(Tools.DescriptorCount));
    }

    private static string Name(int pid)
    {
        var comm = File.Exists($"/proc/{pid}/comm") ? File.ReadAllText($"/proc/{pid}/comm").Trim() : "?";
        return $"{comm} {pid}";
    }

    public void Dispose() => _dispatch?.Dispose();
}
