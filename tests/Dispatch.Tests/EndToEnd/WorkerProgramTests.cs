using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// A pool served by another program speaking the documented hand-off protocol (docs/worker-protocol.md), including
/// handed TLS sessions: the Python worker below runs the TLS 1.3 / 1.2 record layer itself (AES-GCM, ChaCha20-Poly1305).
/// </summary>
public sealed class WorkerProgramTests : IDisposable
{
    private const string PythonWorker = """
        #!/usr/bin/python3
        import hashlib, hmac, os, select, socket, struct
        ch = socket.socket(fileno=3)
        def send(sock, t, payload, fds=()):
            socket.send_fds(sock, [struct.pack('<HBBI', t, 5, len(fds), len(payload)) + payload], list(fds))
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
        send(ch, 1, struct.pack('<Bi', 2, os.getpid()))
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
        def ostr(p, o):
            if not p[o]: return None, o + 1
            return rstr(p, o + 1)
        def blob(p, o):
            n = struct.unpack_from('<I', p, o)[0]
            return p[o + 4:o + 4 + n], o + 4 + n
        def handed_tls(conn, p):
            # Connection (96), mode 4: the fields, then the TLS session state (docs/worker-protocol.md).
            o = 10; _, o = rstr(p, o); _, o = rstr(p, o); sni, o = ostr(p, o); proto, o = ostr(p, o); cipher, o = ostr(p, o)
            data, o = blob(p, o)
            version, suite = struct.unpack_from('<HH', p, o); o += 4
            cs, o = blob(p, o); ss, o = blob(p, o); civ, o = blob(p, o); siv, o = blob(p, o)
            rseq, wseq = struct.unpack_from('<QQ', p, o)
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
            chacha = suite in (0x1303, 0xCCA8, 0xCCA9)
            if version == 0x0304:
                h = hashlib.sha384 if suite == 0x1302 else hashlib.sha256
                def label(secret, name, n):
                    full = b'tls13 ' + name
                    info, out, t, i = struct.pack('>HB', n, len(full)) + full + b'\0', b'', b'', 1
                    while len(out) < n:
                        t = hmac.new(secret, t + info + bytes([i]), h).digest(); out += t; i += 1
                    return out[:n]
                kl = 16 if suite == 0x1301 else 32
                rkey, riv, wkey, wiv = label(cs, b'key', kl), label(cs, b'iv', 12), label(ss, b'key', kl), label(ss, b'iv', 12)
            else:
                rkey, riv, wkey, wiv = cs, civ, ss, siv
            raead = (ChaCha20Poly1305 if chacha else AESGCM)(rkey)
            waead = (ChaCha20Poly1305 if chacha else AESGCM)(wkey)
            def xor(iv, seq): return bytes(a ^ b for a, b in zip(iv, b'\0' * 4 + struct.pack('>Q', seq)))
            def open_record(rec, seq):
                body = rec[5:]
                if version == 0x0304:
                    inner = raead.decrypt(xor(riv, seq), body, rec[:5]).rstrip(b'\0')
                    return inner[-1], inner[:-1]
                n = len(body) - 16 - (0 if chacha else 8)
                aad = struct.pack('>QB', seq, rec[0]) + b'\3\3' + struct.pack('>H', n)
                if chacha: return rec[0], raead.decrypt(xor(riv, seq), body, aad)
                return rec[0], raead.decrypt(riv + body[:8], body[8:], aad)
            def seal(ctype, content, seq):
                if version == 0x0304:
                    inner = content + bytes([ctype])
                    header = bytes([23, 3, 3]) + struct.pack('>H', len(inner) + 16)
                    return header + waead.encrypt(xor(wiv, seq), inner, header)
                aad = struct.pack('>QB', seq, ctype) + b'\3\3' + struct.pack('>H', len(content))
                if chacha: body = waead.encrypt(xor(wiv, seq), content, aad)
                else: body = struct.pack('>Q', seq) + waead.encrypt(wiv + struct.pack('>Q', seq), content, aad)
                return bytes([ctype, 3, 3]) + struct.pack('>H', len(body)) + body
            conn.setblocking(True)
            first = (rseq, wseq)
            request = b''
            while b'\r\n\r\n' not in request:
                while len(data) < 5 or len(data) < 5 + struct.unpack_from('>H', data, 3)[0]:
                    more = conn.recv(65536)
                    if not more: return
                    data += more
                n = 5 + struct.unpack_from('>H', data, 3)[0]
                ctype, content = open_record(data[:n], rseq)
                data, rseq = data[n:], rseq + 1
                if ctype == 23: request += content
            text = ('handed %04x %04x %s %s sni %s seq %d %d' % (version, suite, proto, cipher, sni, first[0], first[1])).encode()
            response = b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' % len(text) + text
            conn.sendall(seal(23, response, wseq) + seal(21, b'\1\0', wseq + 1))
            conn.close()
        while True:
            ready, _, _ = select.select([ch, disp], [], [])
            if ch in ready:
                t, p, fds = recv(ch)
                if t is None or t == 5: break
            if disp in ready:
                t, p, fds = recv(disp)
                if t is None: break
                conn = socket.socket(fileno=fds[0])
                if p[8] == 4:
                    handed_tls(conn, p); continue
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
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        ProgramForPoolA(config, dir, "py-worker", PythonWorker);
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

    [SkippableFact]
    public void A_program_that_declares_tlsHandOff_gets_the_TLS_session_and_runs_the_record_layer()
    {
        var site = TwoTenantSite.Create("worker-program-tls", indexB: "B over TLS");
        var (dir, tlsPort) = (site.Directory, site.TlsPort);
        ProgramForPoolA(site.Config, dir, "py-worker", PythonWorker, tlsHandOff: true);
        site.Terminate("a", rsaToo: true);
        site.Terminate("b", rsaToo: true);
        _dispatch = site.StartReady(_output);
        (int Status, string Body, string Headers) Https(string host, params string[] extra) =>
            Tools.Curl([.. extra, "--cacert", TestWorld.CaPath, "--resolve", $"{host}:{tlsPort}:127.0.0.1", $"https://{host}:{tlsPort}/"]);

        // TLS 1.3: the worker derives the keys from the traffic secrets; the dispatcher sent one record under the
        // server's (a NewSessionTicket), none came from the client yet.
        var v13 = Https("a.localhost", "--http1.1");
        Assert.Equal(200, v13.Status);
        Assert.Equal("handed 0304 1301 TLSv1.3 TLS_AES_128_GCM_SHA256 sni a.localhost seq 0 1", v13.Body);
        var v13chacha = Https("a.localhost", "--http1.1", "--tls13-ciphers", "TLS_CHACHA20_POLY1305_SHA256");
        Assert.Equal("handed 0304 1303 TLSv1.3 TLS_CHACHA20_POLY1305_SHA256 sni a.localhost seq 0 1", v13chacha.Body);

        // TLS 1.2: keys and IVs; the Finished messages were record 0 each way.
        var v12 = Https("a.localhost", "--http1.1", "--tlsv1.2", "--tls-max", "1.2");
        Assert.Equal("handed 0303 c02b TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 sni a.localhost seq 1 1", v12.Body);
        var v12chacha = Https("a.localhost", "--http1.1", "--tlsv1.2", "--tls-max", "1.2", "--ciphers", "ECDHE-RSA-CHACHA20-POLY1305");
        Assert.Equal("handed 0303 cca8 TLSv1.2 TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 sni a.localhost seq 1 1", v12chacha.Body);

        // Pool b (Dispatch's own worker) keeps the dispatcher's plaintext socketpair for now.
        Assert.Equal("B over TLS", Https("b.localhost").Body);

        // TLS 1.3 resumption: the dispatcher's ticket (sent under the application key before the hand-off, so the
        // worker starts at write sequence 1) resumes at a.localhost, still handed over; at b.localhost it is refused.
        var session = Path.Combine(dir, "openssl-session");
        string SClient(string host, params string[] extra)
        {
            var r = Tools.RunWithInput($"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n", "openssl", ["s_client", "-connect", $"127.0.0.1:{tlsPort}", "-servername", host, "-CAfile", TestWorld.CaPath, "-ign_eof", .. extra]);
            _output.WriteLine(r.Stdout + r.Stderr);
            return r.Stdout;
        }

        var first = SClient("a.localhost", "-tls1_3", "-sess_out", session);
        Assert.Contains("New, TLSv1.3", first, StringComparison.Ordinal);
        Assert.Contains("handed 0304 1301 TLSv1.3 TLS_AES_128_GCM_SHA256 sni a.localhost seq 0 1", first, StringComparison.Ordinal);
        var again = SClient("a.localhost", "-tls1_3", "-sess_in", session);
        Assert.Contains("Reused, TLSv1.3", again, StringComparison.Ordinal);
        Assert.Contains("handed 0304 1301 TLSv1.3 TLS_AES_128_GCM_SHA256 sni a.localhost seq 0 1", again, StringComparison.Ordinal);
        var elsewhere = SClient("b.localhost", "-tls1_3", "-sess_in", session);
        Assert.Contains("New, TLSv1.3", elsewhere, StringComparison.Ordinal);
        Assert.DoesNotContain("Reused", elsewhere, StringComparison.Ordinal);
        Assert.Contains("B over TLS", elsewhere, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Without_a_worker_a_handed_pool_still_answers_503_through_TLS()
    {
        var site = TwoTenantSite.Create("worker-program-tls-503");
        var tlsPort = site.TlsPort;
        // A worker program that never becomes ready: the dispatcher waits workerWait for it, in vain.
        ProgramForPoolA(site.Config, site.Directory, "silent-worker", "#!/usr/bin/python3\nimport time\ntime.sleep(600)\n", tlsHandOff: true);
        site.Config["dispatcher"]!["workerWait"] = "1s";
        var vhost = site.Vhost("a");
        vhost["tls"] = "terminate";
        vhost["certDirs"] = new JsonArray(site.CertDir("a.localhost"));
        _dispatch = site.StartReady(_output);

        foreach (var version in new[] { "--tlsv1.3", "--tls-max" })
        {
            string[] extra = version == "--tlsv1.3" ? ["--tlsv1.3"] : ["--tls-max", "1.2"];
            var r = Tools.Curl([.. extra, "--http1.1", "--cacert", TestWorld.CaPath, "--resolve", $"a.localhost:{tlsPort}:127.0.0.1", $"https://a.localhost:{tlsPort}/"]);
            Assert.Equal(503, r.Status);
            Assert.Contains("No worker is available for this site right now", r.Body, StringComparison.Ordinal);
        }
    }

    /// <summary>
    /// Pool a served by <paramref name="text"/> as its worker program (written to DIR/<paramref name="name"/>, 0755), its
    /// Landlock rules letting it execute python3; with <paramref name="tlsHandOff"/>, it takes handed TLS sessions.
    /// </summary>
    private static void ProgramForPoolA(JsonObject config, string dir, string name, string text, bool tlsHandOff = false)
    {
        var program = Path.Combine(dir, name);
        File.WriteAllText(program, text);
        File.SetUnixFileMode(program, (UnixFileMode)0b111_101_101);
        var python = new FileInfo("/usr/bin/python3").ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? "/usr/bin/python3";
        config["pools"]!["a"]!["program"] = program;
        if (tlsHandOff)
            config["pools"]!["a"]!["tlsHandOff"] = true;
        config["pools"]!["a"]!["landlock"] = new JsonObject { ["exec"] = new JsonArray(python) };
    }

    public void Dispose() => _dispatch?.Dispose();
}
