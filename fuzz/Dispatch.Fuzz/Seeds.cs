using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Dispatch.Platform.Hosting;
using Dispatch.Wire;
using Dispatch.Wire.Payloads;
using Dispatch.Wire.Tls;
using Serilog.Events;
using Serilog.Parsing;

namespace Dispatch.Fuzz;

/// <summary>
/// Writes the seeds that come from our own writers (the other seeds are captures, see docs/fuzzing.md): every IPC
/// message serialized by its real encoder, the snapshot JSON by SnapshotJson, record-layer scripts, and child stderr
/// lines formatted by the children's real ChildLogFormatter.
/// </summary>
internal static class Seeds
{
    public static void Write(string corpus)
    {
        WriteIpc(Path.Combine(corpus, "ipc"));
        WriteRecordLayer(Path.Combine(corpus, "recordlayer"));
        WriteChildStderr(Path.Combine(corpus, "childstderr"));
    }

    private static void WriteIpc(string dir)
    {
        Directory.CreateDirectory(dir);
        var session13 = new TlsSessionState(TlsSessionState.Tls13, 0x1301, new byte[32], new byte[32], [], [], 1, 2);
        var session12 = new TlsSessionState(TlsSessionState.Tls12, 0xC02F, new byte[16], new byte[16], new byte[4], new byte[4], 1, 1);
        var messages = new (string Name, Func<byte[]> Encode, MessageType Type)[]
        {
            ("hello", () => Encode(new Hello(ProcessRole.Worker, 1234)), MessageType.Hello),
            ("jailspec", () => Encode(new JailSpec(ProcessRole.Worker, 10001, 10001, [10001, 20], ["/usr/lib/dotnet", "/srv/a"], ["/usr/lib/dotnet"], ["/srv/a/logs"],
                [new ResourceLimit(7, 1024, 4096)], "pool a", [new ModuleSpec("/opt/libumask.so", "umask", "{\"umask\":\"027\"}")], [8000, 9000], string.Empty,
                ["/sys/fs/cgroup/dispatch/a/cgroup.procs"], ["/srv/a/tmp"], new ChrootSpec(64 << 20, ["/usr"], ["/srv/a"]), true)), MessageType.JailSpec),
            ("jailspec-min", () => Encode(new JailSpec(ProcessRole.Dispatcher, 10000, 10000, [], [], [], [], [], "dispatcher", [], [])), MessageType.JailSpec),
            ("jailproof", () => Encode(new JailProof(10001, 10001, true, true, [new ProbeResult("/etc/shadow", 8, 0, "EACCES", false)], [13])), MessageType.JailProof),
            ("ready", () => Encode(new Ready("worker 3 of pool a")), MessageType.Ready),
            ("stop", () => Encode(new Stop(5000, false)), MessageType.Stop),
            ("dispatchersetup", () => Encode(new DispatcherSetup([new ListenerInfo("tls", "127.0.0.1:8443", ["10.0.0.0/8"]), new ListenerInfo("http", "[::1]:8080", [])], ["/etc/passwd"], 8)), MessageType.DispatcherSetup),
            ("needworker", () => Encode(new NeedWorker(77, "a")), MessageType.NeedWorker),
            ("workerready", () => Encode(new WorkerReady(77, "a", 3, 4321)), MessageType.WorkerReady),
            ("workerrefused", () => Encode(new WorkerRefused(77, "a", "pool at its limit of 4 workers")), MessageType.WorkerRefused),
            ("workergone", () => Encode(new WorkerGone(3, "a", "exited with status 1")), MessageType.WorkerGone),
            ("routeupdate", () => Encode(new RouteUpdate(["b", "c"])), MessageType.RouteUpdate),
            ("statsrequest", () => Encode(new StatsRequest(9)), MessageType.StatsRequest),
            ("dispatcherstats", () => Encode(new DispatcherStats(9, [new StatCounter("connections", 12), new StatCounter("handshakes_ok", 3)], [new WorkerStat(4321, "a", 2, 40)])), MessageType.DispatcherStats),
            ("metricsrequest", () => Encode(new MetricsRequest(10)), MessageType.MetricsRequest),
            ("metricsreply", () => Encode(new MetricsReply(10, true)), MessageType.MetricsReply),
            ("workersetup", () => Encode(new WorkerSetup("a", 3, SnapshotJson.Serialize(Pool()), ["/srv/b"], 8, 2)), MessageType.WorkerSetup),
            ("logfiles", () => Encode(new LogFiles(["a.localhost", "www.a.localhost"])), MessageType.LogFiles),
            ("errorlogfiles", () => Encode(new ErrorLogFiles(["a.localhost"])), MessageType.ErrorLogFiles),
            ("connection-http", () => Encode(new Connection(5, ConnectionMode.PlainHttp, AppProtocol.Http1, "203.0.113.7:51000", "127.0.0.1:8080", null, null, null, "GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n"u8.ToArray())), MessageType.Connection),
            ("connection-tls13", () => Encode(new Connection(6, ConnectionMode.HandedTls, AppProtocol.Http2, "[2001:db8::1]:443", "127.0.0.1:8443", "a.localhost", "TLSv1.3", "TLS_AES_128_GCM_SHA256", new byte[] { 23, 3, 3, 0, 0 }, session13)), MessageType.Connection),
            ("connection-tls12", () => Encode(new Connection(7, ConnectionMode.HandedTls, AppProtocol.Http1, "198.51.100.2:40000", "127.0.0.1:8443", "b.localhost", "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", ReadOnlyMemory<byte>.Empty, session12)), MessageType.Connection),
            ("workerload", () => Encode(new WorkerLoad(3, 1000)), MessageType.WorkerLoad),
            ("workertraffic", () => Encode(new WorkerTraffic([Traffic("a.localhost"), Traffic("www.a.localhost")])), MessageType.WorkerTraffic),
            ("dispatcherstats-traffic", () => Encode(new DispatcherStats(9, [new StatCounter("connections", 12)], [], Traffic: true)), MessageType.DispatcherStats),
        };
        foreach (var (name, encode, type) in messages)
            File.WriteAllBytes(Path.Combine(dir, $"seed-{name}"), IpcTarget.Input(type, encode()));

        // The same Hello as a raw datagram (header written by hand as IpcChannel.Send writes it).
        var hello = Encode(new Hello(ProcessRole.Dispatcher, 99));
        var raw = new byte[1 + IpcChannel.HeaderSize + hello.Length];
        raw[0] = IpcTarget.RawSelector;
        BinaryPrimitives.WriteUInt16LittleEndian(raw.AsSpan(1), (ushort)MessageType.Hello);
        raw[3] = IpcChannel.Version;
        BinaryPrimitives.WriteUInt32LittleEndian(raw.AsSpan(5), (uint)hello.Length);
        hello.CopyTo(raw, 1 + IpcChannel.HeaderSize);
        File.WriteAllBytes(Path.Combine(dir, "seed-raw-hello"), raw);

        var snapshot = new RouteSnapshot(
            3,
            new DispatcherSettings(10000, 16384, 30000, 10000),
            [
                new VhostRoute("a.localhost", ["www.a.localhost"], "a", TlsModes.Terminate, [new CertificatePem("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")], HttpModes.Redirect, true, TlsEngines.BouncyCastle),
                new VhostRoute("b.localhost", [], "b", TlsModes.Passthrough, [], HttpModes.Serve, false, TlsEngines.OpenSsl),
            ],
            "a.localhost",
            8443,
            [new PoolRoute("a", 100, false, 1, 60000, true), new PoolRoute("b", 10, true, 0, 1000)]);
        File.WriteAllBytes(Path.Combine(dir, "seed-snapshot"), [IpcTarget.SnapshotSelector, .. SnapshotJson.Serialize(snapshot)]);
        File.WriteAllBytes(Path.Combine(dir, "seed-pool"), [IpcTarget.PoolSelector, .. SnapshotJson.Serialize(Pool())]);
        File.WriteAllBytes(Path.Combine(dir, "seed-traffic-table"), [IpcTarget.TrafficTableSelector, .. VhostTraffic.EncodeTable([Traffic("a.localhost"), Traffic("b.localhost")])]);

        // One input per refusal of docs/protocol.md ("What decoders refuse"): the fuzzer starts at each boundary.
        var refused = new (string Name, MessageType Type, byte[] Payload)[]
        {
            ("jailspec-role", MessageType.JailSpec, Encode(new JailSpec((ProcessRole)9, 10001, 10001, [], [], [], [], [], "a", [], []))),
            ("jailspec-limits", MessageType.JailSpec, Encode(new JailSpec(ProcessRole.Worker, 10001, 10001, [], [], [], [], [new ResourceLimit(7, 4096, 1024), new ResourceLimit(7, 1, 1), new ResourceLimit(16, 1, 1)], "a", [], []))),
            ("jailproof-threads", MessageType.JailProof, Encode(new JailProof(10001, 10001, true, true, [new ProbeResult("/etc/shadow", 8, 9, "EACCES", false), new ProbeResult("/etc/passwd", -1, -1, "EACCES", false)], [13, -2]))),
            ("workertraffic-vhost-twice", MessageType.WorkerTraffic, Encode(new WorkerTraffic([Traffic("a.localhost"), Traffic("a.localhost")]))),
            ("workertraffic-negative", MessageType.WorkerTraffic, Encode(new WorkerTraffic([Traffic("a.localhost") with { BytesSent = -1 }]))),
            ("dispatcherstats-key", MessageType.DispatcherStats, Encode(new DispatcherStats(9, [new StatCounter("connections", 12), new StatCounter("connections", 13)], []))),
            ("logfiles-vhost", MessageType.LogFiles, Encode(new LogFiles(["a.localhost", "a.localhost"]))),
            ("logfiles-host-invalid", MessageType.ErrorLogFiles, Encode(new ErrorLogFiles(["a.localhost", "a.localhost/../b"]))),
            ("dispatchersetup-protocol", MessageType.DispatcherSetup, Encode(new DispatcherSetup([new ListenerInfo("tls", "127.0.0.1:8443", []), new ListenerInfo("https", "127.0.0.1:443", [])], [], 8))),
            ("dispatchersetup-metrics-twice", MessageType.DispatcherSetup, Encode(new DispatcherSetup([new ListenerInfo("metrics", "127.0.0.1:9187", []), new ListenerInfo("metrics", "127.0.0.1:9188", [])], [], 8))),
            // 13 paths of 3800 bytes: 49400 bytes, over the 49152 a probe list holds (JailProof.MaxProbeBytes).
            ("workersetup-probe-bytes", MessageType.WorkerSetup, Encode(new WorkerSetup("a", 3, [], [.. Enumerable.Range(0, 13).Select(i => $"/srv/{i:D2}/" + new string('p', 3792))], 8, 0))),
        };
        foreach (var (name, type, payload) in refused)
            File.WriteAllBytes(Path.Combine(dir, $"seed-refused-{name}"), IpcTarget.Input(type, payload));
        var snapshotJson = Encoding.UTF8.GetString(SnapshotJson.Serialize(snapshot));
        var poolJson = Encoding.UTF8.GetString(SnapshotJson.Serialize(Pool()));
        var webJson = Encoding.UTF8.GetString(SnapshotJson.Serialize(Pool() with
        {
            Vhosts = [Pool().Vhosts[0] with { Web = VhostWeb.Default with { ErrorPages = [new ErrorPageRoute(404, "/errors/404.html")], Redirects = [new RedirectRoute("/old", "/new", 301, true)] } }],
        }));
        var refusedJson = new (string Name, byte Selector, string Json, string Find, string Replace)[]
        {
            ("snapshot-null-list", IpcTarget.SnapshotSelector, snapshotJson, "\"aliases\":[]", "\"aliases\":null"),
            ("snapshot-null-element", IpcTarget.SnapshotSelector, snapshotJson, "\"aliases\":[]", "\"aliases\":[null]"),
            ("snapshot-missing-member", IpcTarget.SnapshotSelector, snapshotJson, "\"pool\":\"b\",", string.Empty),
            ("snapshot-member-twice", IpcTarget.SnapshotSelector, snapshotJson, "\"pool\":\"b\",", "\"pool\":\"b\",\"pool\":\"a\","),
            ("snapshot-host-twice", IpcTarget.SnapshotSelector, snapshotJson, "\"aliases\":[]", "\"aliases\":[\"WWW.a.localhost.\"]"),
            ("snapshot-host-invalid", IpcTarget.SnapshotSelector, snapshotJson, "\"aliases\":[]", "\"aliases\":[\"*.*.b.localhost\"]"),
            ("snapshot-default-vhost", IpcTarget.SnapshotSelector, snapshotJson, "\"defaultVhost\":\"a.localhost\"", "\"defaultVhost\":\"c.localhost\""),
            ("pool-host-invalid", IpcTarget.PoolSelector, poolJson, "\"name\":\"a.localhost\"", "\"name\":\"a.localhost:8080\""),
            ("snapshot-negative", IpcTarget.SnapshotSelector, snapshotJson, "\"headerTimeoutMs\":10000", "\"headerTimeoutMs\":-1"),
            ("pool-null-element", IpcTarget.PoolSelector, poolJson, "\"index.php\"", "null"),
            ("pool-null-upstream", IpcTarget.PoolSelector, poolJson, "\"unix:/srv/a/app.sock\"", "null"),
            ("pool-key-twice", IpcTarget.PoolSelector, poolJson, "\"directoryListing\":true", "\"directoryListing\":true,\"directoryListing\":false"),
            ("snapshot-tlsmode", IpcTarget.SnapshotSelector, snapshotJson, "\"tlsMode\":\"passthrough\"", "\"tlsMode\":\"Passthrough\""),
            ("snapshot-httpmode", IpcTarget.SnapshotSelector, snapshotJson, "\"httpMode\":\"redirect\"", "\"httpMode\":\"\""),
            ("snapshot-engine", IpcTarget.SnapshotSelector, snapshotJson, "\"engine\":\"openssl\"", "\"engine\":\"gnutls\""),
            ("pool-level", IpcTarget.PoolSelector, webJson, "\"level\":\"fastest\"", "\"level\":\"max\""),
            ("pool-error-status", IpcTarget.PoolSelector, webJson, "\"status\":404", "\"status\":200"),
            ("pool-redirect-status", IpcTarget.PoolSelector, webJson, "\"status\":301", "\"status\":304"),
        };
        foreach (var (name, selector, json, find, replace) in refusedJson)
        {
            if (!json.Contains(find, StringComparison.Ordinal))
                throw new InvalidOperationException($"seed-refused-{name}: the payload has no {find}");
            File.WriteAllBytes(Path.Combine(dir, $"seed-refused-{name}"), [selector, .. Encoding.UTF8.GetBytes(json.Replace(find, replace, StringComparison.Ordinal))]);
        }
    }

    /// <summary>A vhost's traffic with every count set (a few requests of each class, bytes, durations in three buckets).</summary>
    private static VhostTraffic Traffic(string vhost) =>
        new(vhost, [1, 120, 7, 13, 2], 1_234_567, 4_321_000, [100, 20, 10, 5, 3, 2, 1, 1, 0, 0, 0, 1]);

    private static PoolSettings Pool() => new(
        "a",
        [new WorkerVhost("a.localhost", ["www.a.localhost"], "/srv/a/www", true, ["index.html", "index.php"], [new CgiRoute("/cgi-bin/", "/srv/a/cgi")], TimeSpan.FromSeconds(30), null, [new ProxyRoute("/app/", ProxyUpstream.TryParse("unix:/srv/a/app.sock", out var upstream, out _) ? upstream : throw new InvalidOperationException(), TimeSpan.Zero, TimeSpan.Zero)])],
        false);

    private static byte[] Encode<T>(T message)
        where T : IWireMessage<T>
    {
        var buffer = new byte[IpcChannel.MaxDatagram];
        var writer = new WireWriter(buffer);
        message.Encode(ref writer);
        return buffer.AsSpan(0, writer.Length).ToArray();
    }

    private static void WriteRecordLayer(string dir)
    {
        Directory.CreateDirectory(dir);
        var get = "GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n"u8.ToArray();
        byte[] closeNotify = [1, 0];
        byte[] keyUpdateRequested = [24, 0, 0, 1, 1];
        for (byte suite = 0; suite < RecordLayerTarget.Suites.Length; suite++)
        {
            var tls13 = RecordLayerTarget.Suites[suite].Version == TlsSessionState.Tls13;
            File.WriteAllBytes(Path.Combine(dir, $"seed-{suite}-request-close"), [suite, .. Op(0, get), .. Op(1 << 2, closeNotify)]);
            File.WriteAllBytes(Path.Combine(dir, $"seed-{suite}-bad-mac"), [suite, .. Op(3, get)]);
            File.WriteAllBytes(Path.Combine(dir, $"seed-{suite}-truncated"), [suite, .. Op(0, get), .. Op(1, [23, 3, 3, 0, 40, 1, 2, 3])]);
            if (tls13)
                File.WriteAllBytes(Path.Combine(dir, $"seed-{suite}-keyupdate"), [suite, .. Op(0, get), .. Op(2 << 2, keyUpdateRequested), 2, .. Op(0, get), .. Op(1 << 2, closeNotify)]);
        }
    }

    private static byte[] Op(byte op, byte[] bytes) => [op, (byte)(bytes.Length >> 8), (byte)bytes.Length, .. bytes];

    private static void WriteChildStderr(string dir)
    {
        Directory.CreateDirectory(dir);
        var formatter = new ChildLogFormatter();
        var parser = new MessageTemplateParser();
        var events = new (string Name, LogEvent Event)[]
        {
            ("access", Event(parser, LogEventLevel.Information, "{Vhost} {Status} {Path}", null, ("Vhost", "a.localhost"), ("Status", 200), ("Path", "/index.html"), ("ConnectionId", 17L))),
            ("warning", Event(parser, LogEventLevel.Warning, "TLS connection {ConnectionId} refused: {Alert} ({Reason})", null, ("ConnectionId", "c-9"), ("Alert", "bad_record_mac"), ("Reason", "authentication failed"))),
            ("error", Event(parser, LogEventLevel.Error, "CGI {Script} failed", new InvalidOperationException("exec format error\nsecond line"), ("Script", "/cgi-bin/x.sh"), ("Pool", "a"), ("Ok", true), ("Ratio", 0.5))),
            ("plain", Event(parser, LogEventLevel.Debug, "worker ready", null)),
        };
        foreach (var (name, e) in events)
        {
            using var text = new StringWriter(CultureInfo.InvariantCulture);
            formatter.Format(e, text);
            File.WriteAllText(Path.Combine(dir, $"seed-{name}"), text.ToString(), new UTF8Encoding(false));
        }

        // What the formatter never writes and a compromised child may: the master's reader at its limits (docs/protocol.md,
        // "The child stderr channel"). A line over the 4096 characters the master keeps, its properties beyond the cut;
        // a surrogate pair (one 4-byte UTF-8 sequence) whose halves fall on both sides of the cut; bytes that are not
        // UTF-8 (a stray continuation byte, an overlong NUL, an encoded surrogate, a sequence cut by the line's end), in
        // the text and in the JSON; escaped lone surrogates in a property's name and value (they made the JSON reader
        // throw an InvalidOperationException, which ended the pump).
        const int MaxLine = 4096;
        var utf8 = new UTF8Encoding(false);
        var longLine = "INF " + new string('x', MaxLine + 900) + "\u001f{\"Vhost\":\"a.localhost\"}\nINF after\n";
        File.WriteAllText(Path.Combine(dir, "seed-long-line"), longLine, utf8);
        var prefix = "INF x\u001f{\"Vhost\":\"";
        var cut = prefix + new string('a', MaxLine - 1 - prefix.Length) + "\U0001D11E\"}\nINF after\n";
        if (cut.IndexOf('\uD834', StringComparison.Ordinal) != MaxLine - 1)
            throw new InvalidOperationException("seed-surrogate-cut: the pair does not straddle the cut");
        File.WriteAllText(Path.Combine(dir, "seed-surrogate-cut"), cut, utf8);
        byte[] invalid =
        [
            .. "WRN a"u8, 0x80, .. " b"u8, 0xC0, 0x80, .. " c"u8, 0xED, 0xA0, 0x80, .. " d"u8, 0xFF, 0xFE, (byte)'\n',
            .. "INF e\u001f{\"Vhost\":\""u8, 0xE2, 0x82, .. "\",\"N"u8, 0xF0, 0x9D, .. "\":1}\n"u8,
            .. "INF f "u8, 0xF0, 0x9D, 0x84,
        ];
        File.WriteAllBytes(Path.Combine(dir, "seed-invalid-utf8"), invalid);
        File.WriteAllText(Path.Combine(dir, "seed-escaped-surrogates"), "INF x\u001f{\"Vhost\":\"\\ud800\"}\nWRN y\u001f{\"\\udc00\":1,\"Pool\":\"a\"}\nINF z\u001f{\"Vhost\":\"\\ud834\\udd1e\"}\n", utf8);
    }

    private static LogEvent Event(MessageTemplateParser parser, LogEventLevel level, string template, Exception? exception, params (string Name, object Value)[] properties) =>
        new(DateTimeOffset.UnixEpoch, level, exception, parser.Parse(template), properties.Select(p => new LogEventProperty(p.Name, new ScalarValue(p.Value))));
}
