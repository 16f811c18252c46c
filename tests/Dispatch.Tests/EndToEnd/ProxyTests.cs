using System.Diagnostics;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>The reverse-proxy handler: the tenant's own app on a Unix socket it owns, reached through its jailed worker.</summary>
public sealed class ProxyTests : IDisposable
{
    private const string App = """
        import os, socketserver, sys
        from http.server import BaseHTTPRequestHandler
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                body = ("app uid=%d path=%s xff=%s proto=%s host=%s" % (os.getuid(), self.path, self.headers.get("X-Forwarded-For"), self.headers.get("X-Forwarded-Proto"), self.headers.get("X-Forwarded-Host"))).encode()
                self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
            def address_string(self): return "unix"
            def log_message(self, *a): pass
        class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer): pass
        path = sys.argv[1]
        if os.path.exists(path): os.unlink(path)
        srv = S(path, H); os.chmod(path, 0o600); print("listening", flush=True); srv.serve_forever()
        """;

    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;
    private Process? _app;

    public ProxyTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void Requests_reach_the_tenants_app_on_its_unix_socket_and_a_stopped_app_gives_502()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("proxy");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "static A", ["run/.keep"] = string.Empty, ["app.py"] = App });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var socket = Path.Combine(a, "run", "app.sock");
        _app = TestWorld.StartTenantApp(Path.Combine(a, "app.py"), out var ready, socket);
        Assert.Equal("listening", ready);

        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["vhosts"]!["a.localhost"]!["proxy"] = new JsonObject { ["/app/"] = $"unix:{socket}" };
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        var url = $"http://127.0.0.1:{_dispatch.HttpPort}";

        var r = Tools.Curl("-H", "Host: a.localhost", $"{url}/app/x%2Fy?q=1");
        Assert.Equal(200, r.Status);
        Assert.Equal("app uid=10001 path=/app/x%2Fy?q=1 xff=127.0.0.1 proto=http host=a.localhost", r.Body);
        Assert.Equal("static A", Tools.Curl("-H", "Host: a.localhost", $"{url}/").Body); // outside the prefix: static files

        _app.Kill();
        _app.WaitForExit();
        var down = Tools.Curl("-H", "Host: a.localhost", $"{url}/app/");
        Assert.Equal(502, down.Status);
    }

    /// <summary>The same application on a loopback TCP address: prints its port, answers GET like <see cref="App"/>.</summary>
    private const string TcpApp = """
        import os, sys
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                body = ("app uid=%d at %s path=%s" % (os.getuid(), self.server.server_address[0], self.path)).encode()
                self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
            def log_message(self, *a): pass
        srv = ThreadingHTTPServer((sys.argv[1], 0), H); print(srv.server_address[1], flush=True); srv.serve_forever()
        """;

    private readonly List<Process> _apps = [];

    /// <summary>
    /// Two upstreams the old parsers disagreed on: <c>HTTP://127.0.0.1:P</c> (upper-case scheme: accepted by check, but
    /// no Landlock connect rule, so the jailed worker was denied) and <c>http://127.0.0.2:P</c> (accepted by check, then
    /// refused by the worker at start, a crash loop). One parser now: both accepted by check and by run, the port ruled
    /// in, and both reached from the jailed worker.
    /// </summary>
    [SkippableFact]
    public void Loopback_upstreams_in_any_case_and_anywhere_in_127_8_are_reached_from_the_jailed_worker()
    {
        TestWorld.RequireRoot();
        Skip.If(Dispatch.Protocol.Hosting.Landlock.AbiVersion() < Dispatch.Protocol.Hosting.Landlock.NetworkAbi, "LANDLOCK NETWORK TEST SKIPPED: no Landlock TCP rules on this kernel");
        var dir = TestWorld.NewTestDirectory("proxy-loopback");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "static A", ["tcp.py"] = TcpApp });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        int StartApp(string address)
        {
            _apps.Add(TestWorld.StartTenantApp(Path.Combine(a, "tcp.py"), out var port, address));
            return int.Parse(port!, System.Globalization.CultureInfo.InvariantCulture);
        }

        var upper = StartApp("127.0.0.1");
        var other = StartApp("127.0.0.2");
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["vhosts"]!["a.localhost"]!["proxy"] = new JsonObject
        {
            ["/upper/"] = $"HTTP://127.0.0.1:{upper}",
            ["/other/"] = $"http://127.0.0.2:{other}/",
        };
        var conf = Path.Combine(dir, "conf");
        Directory.CreateDirectory(conf);
        File.WriteAllText(Path.Combine(conf, "dispatch.json"), config.ToJsonString());
        var check = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", Path.Combine(conf, "dispatch.json"));
        Assert.True(check.ExitCode == 0, check.Stderr + check.Stdout);

        _dispatch = DispatchInstance.StartReady(conf, config, _output);
        var url = $"http://127.0.0.1:{_dispatch.HttpPort}";
        var r = Tools.Curl("-H", "Host: a.localhost", $"{url}/upper/x");
        Assert.True(r.Status == 200, $"{r.Status} {r.Body}");
        Assert.Equal("app uid=10001 at 127.0.0.1 path=/upper/x", r.Body);
        r = Tools.Curl("-H", "Host: a.localhost", $"{url}/other/y?z=1");
        Assert.True(r.Status == 200, $"{r.Status} {r.Body}");
        Assert.Equal("app uid=10001 at 127.0.0.2 path=/other/y?z=1", r.Body);
        Assert.Equal("static A", Tools.Curl("-H", "Host: a.localhost", $"{url}/").Body);
    }

    public void Dispose()
    {
        foreach (var app in _apps)
        {
            if (!app.HasExited)
                app.Kill();
            app.Dispose();
        }


        if (_app is { HasExited: false })
            _app.Kill();
        _app?.Dispose();
        _dispatch?.Dispose();
    }
}
