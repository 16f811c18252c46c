using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>A pool served by another program speaking the documented hand-off protocol (docs/worker-protocol.md).</summary>
public sealed class WorkerProgramTests : IDisposable
{
    private const string PythonWorker = """
        #!/usr/bin/python3
        import os, select, socket, struct
        ch = socket.socket(fileno=3)
        def send(sock, t, payload, fds=()):
            socket.send_fds(sock, [struct.pack('<HBBI', t, 3, len(fds), len(payload)) + payload], list(fds))
        def recv(sock):
            msg, fds, _, _ = socket.recv_fds(sock, 65536, 16)
            if not msg: return None, b'', []
            t, v, n, l = struct.unpack_from('<HBBI', msg)
            return t, msg[8:8 + l], fds
        def rstr(p, o):
            n = struct.unpack_from('<H', p, o)[0]
            return p[o + 2:o + 2 + n].decode(), o + 2 + n
        def wstr(x):
            b = x.encode()
            return struct.pack('<H', len(b)) + b
        send(ch, 1, struct.pack('<BiH', 2, os.getpid(), 3))
        t, p, fds = recv(ch)
        assert t == 64, t
        disp = socket.socket(fileno=fds[0])
        pool, o = rstr(p, 0)
        o += 4
        o += 4 + struct.unpack_from('<I', p, o)[0]
        probes = []
        count = struct.unpack_from('<H', p, o)[0]; o += 2
        for _ in range(count):
            x, o = rstr(p, o); probes.append(x)
        threads, logs = struct.unpack_from('<ii', p, o)
        for _ in range(logs): recv(ch)
        try:
            os.setresuid(0, 0, 0); refused = 0
        except PermissionError:
            refused = 1
        nnp = 1 if 'NoNewPrivs:\t1' in open('/proc/self/status').read() else 0
        body = struct.pack('<IIBBH', os.getuid(), os.getgid(), refused, nnp, len(probes))
        for path in probes:
            try:
                open(path, 'rb').close(); opened = 1
            except OSError:
                opened = 0
            body += wstr(path) + struct.pack('<ii', 1, opened) + wstr('not tried by this worker') + b'\0'
        send(ch, 3, body)
        send(ch, 4, wstr('python worker for ' + pool))
        while True:
            ready, _, _ = select.select([ch, disp], [], [])
            if ch in ready:
                t, p, fds = recv(ch)
                if t is None or t == 5: break
            if disp in ready:
                t, p, fds = recv(disp)
                if t is None: break
                conn = socket.socket(fileno=fds[0])
                text = ('python worker pid %d uid %d pool %s' % (os.getpid(), os.getuid(), pool)).encode()
                conn.setblocking(True)
                conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' % len(text) + text)
                conn.close()
        """;

    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public WorkerProgramTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void A_pool_can_be_served_by_another_program_jailed_the_same_way()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("worker-program");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var program = Path.Combine(dir, "py-worker");
        File.WriteAllText(program, PythonWorker);
        File.SetUnixFileMode(program, (UnixFileMode)0b111_101_101);
        var python = new FileInfo("/usr/bin/python3").ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? "/usr/bin/python3";
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["pools"]!["a"]!["program"] = program;
        config["pools"]!["a"]!["landlock"] = new JsonObject { ["exec"] = new JsonArray(python) };
        _dispatch = DispatchInstance.StartReady(dir, config, _output);

        var r = Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/");
        Assert.Equal(200, r.Status);
        Assert.Matches(new Regex(@"^python worker pid \d+ uid 10001 pool a$"), r.Body);
        var worker = _dispatch.WorkerPid("a");
        Assert.Contains("python3", File.ReadAllText($"/proc/{worker}/cmdline"), StringComparison.Ordinal);
        Assert.Equal("1", Tools.Status($"/proc/{worker}/status")["NoNewPrivs"]);
        // Its proof went through the master's check: the other tenant's root denied to it.
        Assert.Contains($"{b} [0/1 threads opened", _dispatch.WaitForLine(new Regex($@"Jail of Worker {worker} \(a\) holds: .*")).Value, StringComparison.Ordinal);
        // Pool b keeps Dispatch's own worker.
        Assert.Equal("B", Tools.Curl("-H", "Host: b.localhost", $"http://127.0.0.1:{_dispatch.HttpPort}/").Body);
    }

    public void Dispose() => _dispatch?.Dispose();
}
