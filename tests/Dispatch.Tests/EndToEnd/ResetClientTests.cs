using System.Globalization;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// Clients that end their connections with a reset (SO_LINGER 0: an RST) — after a keep-alive response, and in the
/// middle of a large one — on plain HTTP and on TLS handed to the worker (the worker runs the record layer). Python's
/// socket and ssl (OpenSSL) are the clients. Each request served has its access-log line, as a client that closes
/// normally gets, and the workers hold no more descriptors than before. The worker throws fewer exceptions for these
/// (docs/operations.md, "Where the CPU goes"); what must not change is what this checks.
/// </summary>
public sealed class ResetClientTests : IDisposable
{
    private const int PerKind = 15;

    private const string Client = """
        import socket, ssl, struct, sys
        port, host, tls, ca, path, agent, mode = sys.argv[1], sys.argv[2], sys.argv[3] == "tls", sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
        raw = socket.create_connection(("127.0.0.1", int(port)), timeout=30)
        s = raw
        if tls:
            ctx = ssl.create_default_context(cafile=ca)
            s = ctx.wrap_socket(raw, server_hostname=host)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("closed before the response head")
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            sys.exit(head.decode(errors="replace"))
        if mode == "whole":
            length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
            while len(body) < length:
                chunk = s.recv(65536)
                if not chunk:
                    sys.exit("closed inside the body")
                body += chunk
        # Either way: a reset (no close_notify), with whatever is still unread discarded.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        """;

    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public ResetClientTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void Clients_that_reset_get_their_access_log_lines_and_leave_the_workers_descriptors_at_baseline()
    {
        var big = new string('x', 4 << 20);
        var site = TwoTenantSite.Create("reset-clients", moreA: new Dictionary<string, string> { ["big.txt"] = big }, moreB: new Dictionary<string, string> { ["big.txt"] = big });
        site.Terminate("b"); // the default engine: the session is handed to the worker
        var logs = Path.Combine(site.Directory, "logs");
        Directory.CreateDirectory(logs);
        File.SetUnixFileMode(logs, (UnixFileMode)0b111_101_101);
        site.Vhost("a")["accessLog"] = Path.Combine(logs, "a.access.log");
        site.Vhost("b")["accessLog"] = Path.Combine(logs, "b.access.log");
        foreach (var pool in new[] { "a", "b" })
            site.Config["pools"]![pool]!["idleTimeout"] = "10m";
        var script = Path.Combine(site.Directory, "reset_client.py");
        File.WriteAllText(script, Client);
        _dispatch = site.StartReady(_output);
        var d = _dispatch;
        var kinds = new (string Vhost, int Port, bool Tls, string Path, string Mode)[]
        {
            ("a", d.HttpPort, false, "/index.html", "whole"),
            ("a", d.HttpPort, false, "/big.txt", "head"),
            ("b", site.TlsPort, true, "/index.html", "whole"),
            ("b", site.TlsPort, true, "/big.txt", "head"),
        };

        // Warm-up (every path once), then the baseline.
        foreach (var kind in kinds)
            Run(script, kind, "warm-up");
        var workers = new[] { d.WorkerPid("a"), d.WorkerPid("b") };
        Assert.True(Tools.Eventually(() => Stable(workers)), "descriptor counts settle after the warm-up");
        var baseline = workers.ToDictionary(p => p, Tools.DescriptorCountBesidesPollers);
        var kindsBefore = workers.ToDictionary(p => p, Tools.DescriptorKinds);

        for (var i = 0; i < PerKind; i++)
        {
            foreach (var kind in kinds)
                Run(script, kind, $"reset-{kind.Mode}/{i}");
        }

        // The same workers, back to their descriptors (no client socket kept).
        Assert.Equal(workers, new[] { d.WorkerPid("a"), d.WorkerPid("b") });
        foreach (var pid in workers)
        {
            var notBack = Tools.AwaitDescriptorsBack(pid, baseline[pid], kindsBefore[pid], TimeSpan.FromSeconds(60));
            Assert.True(notBack is null, $"worker, after the resetting clients: {notBack}");
        }

        // One line per request, 200, as for any client: a whole response's bytes, or what was sent of the large one.
        foreach (var vhost in new[] { "a", "b" })
        {
            var file = Path.Combine(logs, $"{vhost}.access.log");
            foreach (var (mode, path) in new[] { ("whole", "/index.html"), ("head", "/big.txt") })
            {
                List<string> Lines() => File.Exists(file) ? [.. File.ReadAllLines(file).Where(l => l.Contains($"\"reset-{mode}/", StringComparison.Ordinal))] : [];
                Assert.True(Tools.Eventually(() => Lines().Count >= PerKind), $"{vhost}: {Lines().Count} lines of {mode}");
                var lines = Lines();
                _output.WriteLine(lines[0]);
                Assert.Equal(PerKind, lines.Count);
                Assert.Equal(PerKind, lines.Select(l => l[(l.IndexOf("reset-", StringComparison.Ordinal) + 6)..].Split('"')[0]).Distinct().Count());
                Assert.All(lines, l => Assert.Contains($"\"GET {path} HTTP/1.1\" 200 ", l, StringComparison.Ordinal));
                if (mode == "whole")
                    Assert.All(lines, l => Assert.Contains("\" 200 1 ", l, StringComparison.Ordinal));
                else
                    Assert.All(lines, l => Assert.InRange(long.Parse(l.Split("\" 200 ")[1].Split(' ')[0], CultureInfo.InvariantCulture), 0, big.Length));
            }
        }
    }

    private static void Run(string script, (string Vhost, int Port, bool Tls, string Path, string Mode) kind, string agent)
    {
        // The Debian interpreter run-tests.sh installs, not whatever "python3" is first on PATH: a version manager's shim
        // there (pyenv's) costs 0.4 s a start, 25 s over this test's 64 clients, against 0.08 s.
        var r = Tools.Run(
            "/usr/bin/python3", script, kind.Port.ToString(CultureInfo.InvariantCulture), $"{kind.Vhost}.localhost", kind.Tls ? "tls" : "plain", TestWorld.CaPath, kind.Path, agent, kind.Mode);
        Assert.True(r.ExitCode == 0, $"{agent} {kind}: {r.ExitCode} {r.Stdout} {r.Stderr}");
    }

    private static bool Stable(int[] pids)
    {
        var first = pids.Select(Tools.DescriptorCount).ToList();
        Thread.Sleep(500);
        return first.SequenceEqual(pids.Select(Tools.DescriptorCount));
    }

    public void Dispose() => _dispatch?.Dispose();
}
