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
        var psi = new ProcessStartInfo("setpriv", ["--reuid=10001", "--regid=10001", "--clear-groups", "/usr/bin/python3", Path.Combine(a, "app.py"), socket]) { RedirectStandardOutput = true, UseShellExecute = false };
        _app = Process.Start(psi)!;
        Assert.Equal("listening", _app.StandardOutput.ReadLine());

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

    public void Dispose()
    {
        if (_app is { HasExited: false })
            _app.Kill();
        _app?.Dispose();
        _dispatch?.Dispose();
    }
}
