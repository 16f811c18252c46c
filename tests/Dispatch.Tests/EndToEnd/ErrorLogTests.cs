using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>Per-vhost error logs: opened by the master like access logs, written by the vhost's worker only.</summary>
public sealed class ErrorLogTests : IDisposable
{
    private const string App = """
        import os, socketserver, sys
        from http.server import BaseHTTPRequestHandler
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"app"
                self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
            def address_string(self): return "unix"
            def log_message(self, *a): pass
        class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer): pass
        path = sys.argv[1]
        if os.path.exists(path): os.unlink(path)
        srv = S(path, H); os.chmod(path, 0o600); print("listening", flush=True); srv.serve_forever()
        """;

    private static readonly Regex Line = new(@"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z \[(warn|error|info)\] [a-z.]+ ");

    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;
    private Process? _app;

    public ErrorLogTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void CGI_stderr_and_failures_proxy_errors_and_unreadable_files_reach_only_their_vhosts_error_log_and_SIGUSR1_reopens_it()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("error-logs");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A", ["locked.html"] = "L", ["run/.keep"] = string.Empty, ["app.py"] = App });
        File.SetUnixFileMode(Path.Combine(a, "locked.html"), UnixFileMode.None); // the tenant's own file, unreadable by its own worker
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var cgiA = TestWorld.NewTenantTree(dir, "cgi-a", TestWorld.TenantA, new Dictionary<string, string>
        {
            ["warn.sh"] = "#!/bin/sh\necho \"warn-line $QUERY_STRING\" >&2\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n",
            ["fail.sh"] = "#!/bin/sh\necho 'fail-line: database unreachable' >&2\nexit 3\n",
        });
        var cgiB = TestWorld.NewTenantTree(dir, "cgi-b", TestWorld.TenantB, new Dictionary<string, string>
        {
            ["hello.sh"] = "#!/bin/sh\necho 'b-only-line' >&2\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello\\n'\n",
        });
        foreach (var f in Directory.GetFiles(cgiA).Concat(Directory.GetFiles(cgiB)))
            File.SetUnixFileMode(f, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        var logs = Path.Combine(dir, "logs");
        Directory.CreateDirectory(logs);
        File.SetUnixFileMode(logs, (UnixFileMode)0b111_101_101);
        var aLog = Path.Combine(logs, "a.error.log");
        var bLog = Path.Combine(logs, "b.error.log");

        var socket = Path.Combine(a, "run", "app.sock");
        _app = TestWorld.StartTenantApp(Path.Combine(a, "app.py"), out var ready, socket);
        Assert.Equal("listening", ready);

        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["vhosts"]!["a.localhost"]!["cgi"] = new JsonObject { ["/cgi-bin/"] = cgiA };
        config["vhosts"]!["a.localhost"]!["proxy"] = new JsonObject { ["/app/"] = $"unix:{socket}" };
        config["vhosts"]!["a.localhost"]!["errorLog"] = aLog;
        config["vhosts"]!["b.localhost"]!["cgi"] = new JsonObject { ["/cgi-bin/"] = cgiB };
        config["vhosts"]!["b.localhost"]!["errorLog"] = bLog;
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        var url = $"http://127.0.0.1:{_dispatch.HttpPort}";
        string[] host = ["-H", "Host: a.localhost"];

        Assert.Equal(200, Tools.Curl([.. host, $"{url}/cgi-bin/warn.sh?first"]).Status);
        Assert.Equal(502, Tools.Curl([.. host, $"{url}/cgi-bin/fail.sh"]).Status);
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", $"{url}/cgi-bin/hello.sh").Status);
        Assert.Equal(200, Tools.Curl([.. host, $"{url}/app/"]).Status);
        _app.Kill();
        _app.WaitForExit();
        var down = Tools.Curl([.. host, $"{url}/app/x"]);
        Assert.Equal(502, down.Status);
        Assert.Equal(404, Tools.Curl([.. host, $"{url}/locked.html"]).Status);

        Assert.True(Tools.Eventually(() => Read(aLog).Contains("locked.html", StringComparison.Ordinal) && Read(aLog).Contains("app/x", StringComparison.Ordinal)), Read(aLog));
        Assert.True(Tools.Eventually(() => Read(bLog).Contains("b-only-line", StringComparison.Ordinal)), Read(bLog));
        var aLines = File.ReadAllLines(aLog);
        foreach (var l in aLines)
            _output.WriteLine("a.error.log: " + l);
        Assert.All(aLines, l => Assert.Matches(Line, l));

        // CGI stderr, with the client, the request id and the request line.
        Assert.Contains(aLines, l => Regex.IsMatch(l, @"\[warn\] a\.localhost client=127\.0\.0\.1 request=\S+ ""GET /cgi-bin/warn\.sh"" CGI \S+/warn\.sh of a\.localhost \(pid \d+\) stderr: warn-line first$"));

        // A script that exits non-zero before a header: its stderr, then the failure (502).
        Assert.Contains(aLines, l => l.Contains("\"GET /cgi-bin/fail.sh\"", StringComparison.Ordinal) && l.EndsWith("stderr: fail-line: database unreachable", StringComparison.Ordinal));
        Assert.Contains(aLines, l => Regex.IsMatch(l, @"""GET /cgi-bin/fail\.sh"" CGI \S+/fail\.sh of a\.localhost \(pid \d+\) ended without a response header \(exit status 3, 0 bytes of output\)$"));

        // The stopped application: 502 with the reason.
        Assert.Contains(aLines, l => Regex.IsMatch(l, $@"""GET /app/x"" Proxy of a\.localhost to unix:{Regex.Escape(socket)} for GET /app/x: cannot connect, ""?Refused""?: nothing is listening"));

        // The tenant's own unreadable file: 404 to the client, the reason in the log.
        Assert.Contains(aLines, l => Regex.IsMatch(l, @"""GET /locked\.html"" Static file \S+/locked\.html of a\.localhost could not be read: Permission denied"));

        // Each vhost's lines in its own file only, and not in the master's log.
        Assert.DoesNotContain("b-only-line", Read(aLog), StringComparison.Ordinal);
        Assert.DoesNotContain("warn-line", Read(bLog), StringComparison.Ordinal);
        Assert.DoesNotContain("fail-line", Read(bLog), StringComparison.Ordinal);
        Assert.DoesNotContain("warn-line first", _dispatch.Log, StringComparison.Ordinal);
        Assert.DoesNotContain("b-only-line", _dispatch.Log, StringComparison.Ordinal);
        Assert.Equal("0 10001 640", Tools.Run("stat", "-c", "%u %g %a", aLog).Stdout.Trim());

        // The worker cannot open another tenant's error log (nor its own by path): its jail proof tried.
        var worker = _dispatch.WorkerPid("a");
        var proof = _dispatch.WaitForLine(new Regex($@"Jail of Worker {worker} \(a\) holds: .*")).Value;
        Assert.Contains($"{bLog} [0/32 threads opened", proof, StringComparison.Ordinal);
        Assert.Contains($"{aLog} [0/32 threads opened", proof, StringComparison.Ordinal);

        // logrotate: move the file away, SIGUSR1, and the next line goes to a new file.
        File.Move(aLog, aLog + ".1");
        Assert.Equal(0, Tools.Run("kill", "-USR1", _dispatch.MasterPid.ToString(CultureInfo.InvariantCulture)).ExitCode);
        _dispatch.WaitForLine(new Regex("Access and error logs reopened"));
        Assert.Equal(200, Tools.Curl([.. host, $"{url}/cgi-bin/warn.sh?after-rotate"]).Status);
        Assert.True(Tools.Eventually(() => Read(aLog).Contains("warn-line after-rotate", StringComparison.Ordinal)), Read(aLog));
        Assert.DoesNotContain("after-rotate", File.ReadAllText(aLog + ".1"), StringComparison.Ordinal);
        Assert.Equal("0 10001 640", Tools.Run("stat", "-c", "%u %g %a", aLog).Stdout.Trim());
    }

    [SkippableFact]
    public void An_error_log_path_a_tenant_could_steer_or_two_pools_would_share_is_refused()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("error-logs-unsafe");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var logs = Path.Combine(dir, "logs");
        Directory.CreateDirectory(logs);
        File.SetUnixFileMode(logs, (UnixFileMode)0b111_101_101);
        // A symlink owned by the tenant (as if left there by an earlier, looser setup), pointing at a root file.
        var link = Path.Combine(logs, "a.error.log");
        File.CreateSymbolicLink(link, "/etc/shadow");
        TestWorld.Chown(link, TestWorld.TenantA, recursive: false);
        var tenantDir = Path.Combine(dir, "tenant-logs");
        Directory.CreateDirectory(tenantDir);
        TestWorld.Chown(tenantDir, TestWorld.TenantB, recursive: false);
        var shared = Path.Combine(logs, "shared.log");

        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["vhosts"]!["a.localhost"]!["errorLog"] = link;
        config["vhosts"]!["a.localhost"]!["accessLog"] = shared;
        config["vhosts"]!["b.localhost"]!["errorLog"] = Path.Combine(tenantDir, "b.error.log");
        config["vhosts"]!["b.localhost"]!["accessLog"] = shared;
        var file = Path.Combine(dir, "dispatch.json");
        File.WriteAllText(file, config.ToJsonString());
        var r = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", file);
        _output.WriteLine(r.Stderr);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains($"vhosts:a.localhost:errorLog: {link} is a symbolic link", r.Stderr, StringComparison.Ordinal);
        Assert.Contains($"vhosts:b.localhost:errorLog: logs must live under a directory only root can write: {tenantDir} is owned by uid 10002, not root", r.Stderr, StringComparison.Ordinal);
        Assert.Contains($"vhosts:b.localhost:accessLog: {shared} is also a log of vhost a.localhost of pool a: a log file belongs to one pool", r.Stderr, StringComparison.Ordinal);
        Assert.Equal("root", Tools.Run("stat", "-c", "%U", "/etc/shadow").Stdout.Trim()); // untouched
    }

    private static string Read(string path) => File.Exists(path) ? File.ReadAllText(path) : string.Empty;

    public void Dispose()
    {
        if (_app is { HasExited: false })
            _app.Kill();
        _app?.Dispose();
        _dispatch?.Dispose();
    }
}
