using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// WebSockets through the whole stack: .NET's ClientWebSocket over TLS (terminated by the dispatcher, the session handed
/// to the worker, whose record layer is Kestrel connection middleware), over HTTP/1.1 Upgrade and over HTTP/2 extended
/// CONNECT (RFC 8441), to the tenant's own echo application on its Unix socket, running as the tenant.
/// </summary>
public sealed class ProxyWebSocketTests : IDisposable
{
    /// <summary>A WebSocket echo server in Python's standard library (RFC 6455: handshake, masked frames, ping, close).</summary>
    private const string App = """
        import base64, hashlib, json, os, socketserver, struct, sys
        GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        class H(socketserver.BaseRequestHandler):
            def handle(self):
                self.buf = b""
                while b"\r\n\r\n" not in self.buf:
                    chunk = self.request.recv(4096)
                    if not chunk: return
                    self.buf += chunk
                head, self.buf = self.buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
                key = headers.get("sec-websocket-key")
                if headers.get("upgrade", "").lower() != "websocket" or not key:
                    self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
                self.request.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
                info = {"uid": os.getuid(), "method": method, "target": target, "version": version,
                        "xff": headers.get("x-forwarded-for"), "proto": headers.get("x-forwarded-proto"), "host": headers.get("host")}
                self.send(1, json.dumps(info).encode())
                while True:
                    frame = self.frame()
                    if frame is None: return
                    op, data = frame
                    if op == 8:
                        self.send(8, data[:2])
                        return
                    if op == 9: self.send(10, data)
                    elif op in (1, 2): self.send(op, data)
            def need(self, n):
                while len(self.buf) < n:
                    chunk = self.request.recv(65536)
                    if not chunk: return None
                    self.buf += chunk
                out, self.buf = self.buf[:n], self.buf[n:]
                return out
            def frame(self):
                op, payload = None, b""
                while True:
                    h = self.need(2)
                    if h is None: return None
                    fin, opcode, n = h[0] & 0x80, h[0] & 0x0F, h[1] & 0x7F
                    if n == 126: n = struct.unpack(">H", self.need(2))[0]
                    elif n == 127: n = struct.unpack(">Q", self.need(8))[0]
                    mask = self.need(4) if h[1] & 0x80 else b"\0\0\0\0"
                    data = self.need(n) if n else b""
                    if data is None: return None
                    data = (int.from_bytes(data, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big") if n else b""
                    if opcode >= 8: return (opcode, data)
                    if opcode: op = opcode
                    payload += data
                    if fin: return (op, payload)
            def send(self, op, data):
                n = len(data)
                size = bytes([n]) if n < 126 else bytes([126]) + struct.pack(">H", n) if n < 65536 else bytes([127]) + struct.pack(">Q", n)
                self.request.sendall(bytes([0x80 | op]) + size + data)
        class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True
        path = sys.argv[1]
        if os.path.exists(path): os.unlink(path)
        srv = S(path, H); os.chmod(path, 0o600); print("listening", flush=True); srv.serve_forever()
        """;

    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;
    private Process? _app;
    private int _tlsPort;

    public ProxyWebSocketTests(ITestOutputHelper output) => _output = output;

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_websocket_over_tls_reaches_the_tenants_app_over_http11_and_http2(bool http2)
    {
        Start();
        using var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(IPAddress.Loopback, _tlsPort, ct);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
            SslOptions = new SslClientAuthenticationOptions { RemoteCertificateValidationCallback = TrustSampleCa },
        };
        using var invoker = new HttpMessageInvoker(handler);
        using var socket = new ClientWebSocket();
        socket.Options.HttpVersion = http2 ? HttpVersion.Version20 : HttpVersion.Version11;
        socket.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        socket.Options.CollectHttpResponseDetails = true;
        socket.Options.KeepAliveInterval = TimeSpan.Zero;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await socket.ConnectAsync(new Uri($"wss://a.localhost:{_tlsPort}/ws/echo?room=1"), invoker, timeout.Token);
        Assert.Equal(http2 ? HttpStatusCode.OK : HttpStatusCode.SwitchingProtocols, socket.HttpStatusCode);

        // What the application saw: an HTTP/1.1 upgrade, as the tenant's uid, from a client that used https.
        using var info = JsonDocument.Parse(await ReceiveAsync(socket, WebSocketMessageType.Text, timeout.Token));
        var seen = info.RootElement;
        Assert.Equal((int)TestWorld.TenantA, seen.GetProperty("uid").GetInt32());
        Assert.Equal("GET", seen.GetProperty("method").GetString());
        Assert.Equal("/ws/echo?room=1", seen.GetProperty("target").GetString());
        Assert.Equal("HTTP/1.1", seen.GetProperty("version").GetString());
        Assert.Equal("127.0.0.1", seen.GetProperty("xff").GetString());
        Assert.Equal("https", seen.GetProperty("proto").GetString());
        Assert.Equal($"a.localhost:{_tlsPort}", seen.GetProperty("host").GetString());

        // Both ways, several times, small and large (many TLS records, several frames of the record layer).
        for (var round = 0; round < 3; round++)
        {
            var text = $"hello {round} through {(http2 ? "h2" : "http/1.1")}";
            await socket.SendAsync(Encoding.UTF8.GetBytes(text), WebSocketMessageType.Text, true, timeout.Token);
            Assert.Equal(text, Encoding.UTF8.GetString(await ReceiveAsync(socket, WebSocketMessageType.Text, timeout.Token)));
        }

        var data = new byte[300_000];
        new Random(7).NextBytes(data);
        await socket.SendAsync(data, WebSocketMessageType.Binary, true, timeout.Token);
        Assert.Equal(data, await ReceiveAsync(socket, WebSocketMessageType.Binary, timeout.Token));

        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", timeout.Token);
        Assert.Equal(WebSocketCloseStatus.NormalClosure, socket.CloseStatus);
        Assert.Equal(WebSocketState.Closed, socket.State);

        // A plain HTTPS request on another connection still works afterwards.
        var after = Tools.Curl("--cacert", TestWorld.CaPath, "--resolve", $"a.localhost:{_tlsPort}:127.0.0.1", $"https://a.localhost:{_tlsPort}/");
        Assert.Equal(200, after.Status);
        Assert.Equal("static A", after.Body);
    }

    public void Dispose()
    {
        if (_app is { HasExited: false })
            _app.Kill();
        _app?.Dispose();
        _dispatch?.Dispose();
    }

    private static bool TrustSampleCa(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        if (certificate is null || (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None)
            return false;
        using var ca = X509Certificate2.CreateFromPem(File.ReadAllText(TestWorld.CaPath));
        using var custom = new X509Chain();
        custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        custom.ChainPolicy.CustomTrustStore.Add(ca);
        custom.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        if (chain is not null)
            custom.ChainPolicy.ExtraStore.AddRange(chain.ChainPolicy.ExtraStore);
        return custom.Build(new X509Certificate2(certificate));
    }

    private static async Task<byte[]> ReceiveAsync(ClientWebSocket socket, WebSocketMessageType expected, CancellationToken cancellationToken)
    {
        var message = new MemoryStream();
        var buffer = new byte[16 * 1024];
        while (true)
        {
            var result = await socket.ReceiveAsync(buffer, cancellationToken);
            Assert.Equal(expected, result.MessageType);
            message.Write(buffer, 0, result.Count);
            if (result.EndOfMessage)
                return message.ToArray();
        }
    }

    private void Start()
    {
        var site = TwoTenantSite.Create("proxy-ws", "static A", moreA: new Dictionary<string, string> { ["run/.keep"] = string.Empty, ["ws.py"] = App });
        var a = site.RootA;
        var socketPath = Path.Combine(a, "run", "ws.sock");
        _app = TestWorld.StartTenantApp(Path.Combine(a, "ws.py"), out var ready, socketPath);
        Assert.Equal("listening", ready);

        _tlsPort = site.TlsPort;
        site.Terminate("a")["proxy"] = new JsonObject { ["/ws/"] = new JsonObject { ["upstream"] = $"unix:{socketPath}", ["readTimeout"] = "30s" } };
        site.Terminate("b");
        _dispatch = site.StartReady(_output);
    }
}
