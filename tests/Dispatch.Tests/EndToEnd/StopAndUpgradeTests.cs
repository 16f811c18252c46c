using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// Graceful stop with requests in flight, upgrade (SIGUSR2) under a steady request loop, and a killed
/// master leaving no process behind.
/// </summary>
public sealed class StopAndUpgradeTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public StopAndUpgradeTests(ITestOutputHelper output) => _output = output;

    private (DispatchInstance D, string Dir) Start(string name, Action<JsonObject>? adjust = null, Func<string, FakeSystemd>? systemd = null)
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory(name);
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var cgi = TestWorld.NewTenantTree(dir, "cgi-a", TestWorld.TenantA, new Dictionary<string, string>
        {
            // Answers only once it has read a line from the "go" FIFO next to it, which the test writes.
            ["wait.sh"] = "#!/bin/sh\nread line < \"$(dirname \"$SCRIPT_FILENAME\")/go\"\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"$QUERY_STRING\"\n",
        });
        foreach (var f in Directory.GetFiles(cgi))
            File.SetUnixFileMode(f, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        Assert.Equal(0, Tools.Run("mkfifo", "-m", "0644", Path.Combine(cgi, "go")).ExitCode);
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["vhosts"]!["a.localhost"]!["cgi"] = new JsonObject { ["/cgi-bin/"] = cgi };
        config["vhosts"]!["a.localhost"]!["cgiTimeout"] = "300s";
        config["pools"]!["a"]!["maxWorkers"] = 6;
        config["pools"]!["a"]!["maxConnectionsPerWorker"] = 25; // below the worker's 32 concurrent CGI scripts
        config["jailProbe"]!["threads"] = 4;
        adjust?.Invoke(config);
        var notify = systemd?.Invoke(dir);
        _dispatch = notify is null
            ? DispatchInstance.StartReady(dir, config, _output)
            : DispatchInstance.StartReady(dir, config, _output, FakeSystemd.IgnoringSignals, notify.Environment);
        return (_dispatch, dir);
    }

    /// <summary>Direct children of <paramref name="pid"/> (from /proc/*/stat).</summary>
    private static List<int> ChildrenOf(int pid)
    {
        var found = new List<int>();
        foreach (var entry in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(entry), NumberStyles.None, CultureInfo.InvariantCulture, out var candidate))
                continue;
            try
            {
                var stat = File.ReadAllText(Path.Combine(entry, "stat"));
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                if (int.Parse(fields[1], CultureInfo.InvariantCulture) == pid)
                    found.Add(candidate);
            }
            catch (IOException)
            {
            }
        }

        return found;
    }

    /// <summary>Processes (any depth below the workers) running the CGI script.</summary>
    private static int CountScripts(string script) =>
        Directory.EnumerateDirectories("/proc").Count(entry =>
        {
            try
            {
                return Path.GetFileName(entry).All(char.IsAsciiDigit) && File.ReadAllText(Path.Combine(entry, "cmdline")).Contains(script, StringComparison.Ordinal);
            }
            catch (IOException)
            {
                return false;
            }
            catch (UnauthorizedAccessException)
            {
                return false;
            }
        });

    [SkippableFact]
    public async Task SIGTERM_during_100_open_requests_lets_all_of_them_complete_then_every_process_exits()
    {
        var (d, dir) = Start("sigterm-100");
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
        var script = Path.Combine(dir, "cgi-a", "wait.sh");

        // 100 requests, each in a worker, its CGI script waiting for the test's go.
        const int N = 100;
        var sockets = new List<Socket>();
        try
        {
            for (var i = 0; i < N; i++)
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                sockets.Add(s);
                await s.ConnectAsync("127.0.0.1", d.HttpPort);
                await s.SendAsync(Encoding.ASCII.GetBytes($"GET /cgi-bin/wait.sh?request-{i} HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n"));
            }

            Assert.True(Tools.Eventually(() => CountScripts(script) >= N, TimeSpan.FromSeconds(120)), $"only {CountScripts(script)} of {N} CGI scripts started");
            var family = ChildrenOf(d.MasterPid);
            _output.WriteLine($"master {d.MasterPid}, children {string.Join(", ", family)}");
            Assert.True(family.Count >= 2, "expected a dispatcher and at least one worker");

            Assert.Equal(0, Tools.Run("kill", "-TERM", d.MasterPid.ToString(CultureInfo.InvariantCulture)).ExitCode);
            d.WaitForLine(new Regex(@"Stopping: no new connections"));
            // New connections are refused once every copy of the listening socket is closed.
            Assert.True(Tools.Eventually(() =>
            {
                using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    probe.Connect("127.0.0.1", d.HttpPort);
                    return false;
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
                {
                    return true;
                }
            }), "the port still accepts connections after SIGTERM");

            // Now let every script answer (one line each): every request completes.
            string[] answers;
            await using (var go = new FileStream(Path.Combine(dir, "cgi-a", "go"), FileMode.Open, FileAccess.Write))
            {
                await go.WriteAsync(Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("go\n", N))));
                await go.FlushAsync();
                answers = await Task.WhenAll(sockets.Select(ReadToEndAsync));
            }

            for (var i = 0; i < N; i++)
            {
                Assert.StartsWith("HTTP/1.1 200", answers[i], StringComparison.Ordinal);
                Assert.Contains($"\r\nrequest-{i}\n", answers[i], StringComparison.Ordinal); // (chunked)
            }

            Assert.Equal(0, d.WaitForExit());
            foreach (var pid in family)
                Assert.True(Tools.Eventually(() => !Directory.Exists($"/proc/{pid}")), $"process {pid} outlived the master");
        }
        finally
        {
            foreach (var s in sockets)
                s.Dispose();
        }
    }

    [SkippableFact]
    public async Task SIGQUIT_during_a_SIGTERM_drain_ends_it_at_once_and_systemd_hears_both()
    {
        FakeSystemd? systemd = null;
        var (d, dir) = Start("sigquit-drain", config => config["dispatcher"]!["stopGrace"] = "600s", directory => systemd = new FakeSystemd(directory));
        using var notifications = systemd!;
        Assert.Equal("READY=1\nSTATUS=serving", systemd!.Next());
        var script = Path.Combine(dir, "cgi-a", "wait.sh");
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            // One request in flight, its CGI script waiting for a go that comes only after the master is gone.
            await s.ConnectAsync("127.0.0.1", d.HttpPort);
            await s.SendAsync("GET /cgi-bin/wait.sh?held HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n"u8.ToArray());
            Assert.True(Tools.Eventually(() => CountScripts(script) >= 1, TimeSpan.FromSeconds(120)), "the CGI script did not start");
            var family = ChildrenOf(d.MasterPid);
            Assert.True(family.Count >= 2, "expected a dispatcher and a worker");

            Assert.Equal(0, Tools.Run("kill", "-TERM", d.MasterPid.ToString(CultureInfo.InvariantCulture)).ExitCode);
            Assert.Equal("STOPPING=1\nSTATUS=stopping: open connections have 600 s to finish", systemd.Next());
            d.WaitForLine(new Regex(@"Stopping: no new connections, 600000 ms"));

            // The drain would last 10 minutes; SIGQUIT ends it now.
            Assert.Equal(0, Tools.Run("kill", "-QUIT", d.MasterPid.ToString(CultureInfo.InvariantCulture)).ExitCode);
            Assert.Equal("STOPPING=1\nSTATUS=stopping at once", systemd.Next());
            Assert.Equal(0, d.WaitForExit());
            d.WaitForLine(new Regex(@"SIGQUIT during the drain: killing"));
            foreach (var pid in family)
                Assert.True(Tools.Eventually(() => !Directory.Exists($"/proc/{pid}")), $"process {pid} outlived the master");
        }
        finally
        {
            ReleaseScripts(Path.Combine(dir, "cgi-a", "go"));
        }
    }

    /// <summary>Lets CGI scripts still blocked on the "go" FIFO finish (no-op when none reads it).</summary>
    private static void ReleaseScripts(string fifo)
    {
        var fd = open(fifo, 1 /* O_WRONLY */ | 0x800 /* O_NONBLOCK */);
        if (fd < 0)
            return; // ENXIO: no script is waiting
        var line = "go\n"u8.ToArray();
        for (var i = 0; i < 8; i++)
            _ = write(fd, line, line.Length);
        _ = close(fd);
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int open([System.Runtime.InteropServices.MarshalAs(System.Runtime.InteropServices.UnmanagedType.LPUTF8Str)] string path, int flags);

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern nint write(int fd, byte[] buffer, nint count);

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int close(int fd);

    [SkippableFact]
    public async Task SIGTERM_fails_a_connection_still_waiting_for_a_worker_at_once_instead_of_holding_the_stop()
    {
        // Pool b's "worker program" never says hello (a Python script that sleeps), so its connection waits
        // (workerWait: 10 minutes) for a worker that never comes. (A program that failed at once no longer makes a
        // connection wait: a failed start puts the pool in backoff and its waiting connections get 503 at once.)
        var (d, dir) = Start("sigterm-waiting", config =>
        {
            var root = Path.GetDirectoryName(config["vhosts"]!["b.localhost"]!["root"]!.GetValue<string>())!;
            var program = Path.Combine(root, "never-ready");
            File.WriteAllText(program, "#!/usr/bin/python3\nimport time\ntime.sleep(600)\n");
            File.SetUnixFileMode(program, (UnixFileMode)0b111_101_101);
            var python = new FileInfo("/usr/bin/python3").ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? "/usr/bin/python3";
            config["pools"]!["b"]!["program"] = program;
            config["pools"]!["b"]!["landlock"] = new JsonObject { ["exec"] = new JsonArray(python) };
            config["dispatcher"]!["workerWait"] = "600s";
        });
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await s.ConnectAsync("127.0.0.1", d.HttpPort);
        await s.SendAsync("GET / HTTP/1.1\r\nHost: b.localhost\r\n\r\n"u8.ToArray());
        // The connection is waiting once pool b's silent worker runs.
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!WorkerRuns("never-ready"))
        {
            Assert.True(DateTime.UtcNow < deadline, "pool b's worker program was not started within 60 s");
            await Task.Delay(50);
        }

        Assert.Equal(0, Tools.Run("kill", "-TERM", d.MasterPid.ToString(CultureInfo.InvariantCulture)).ExitCode);
        var answer = await ReadToEndAsync(s);
        Assert.StartsWith("HTTP/1.1 503", answer, StringComparison.Ordinal);
        d.WaitForLine(new Regex(@"Connection \d+ for pool b gets no worker: Dispatch is stopping"));
        Assert.Equal(0, d.WaitForExit());
        _ = dir;
    }

    /// <summary>Whether a process runs whose command line names <paramref name="program"/>.</summary>
    private static bool WorkerRuns(string program)
    {
        foreach (var proc in Directory.EnumerateDirectories("/proc"))
        {
            try
            {
                if (File.ReadAllText(Path.Combine(proc, "cmdline")).Contains(program, StringComparison.Ordinal))
                    return true;
            }
            catch (IOException)
            {
                // the process ended, or the entry is not a process
            }
            catch (UnauthorizedAccessException)
            {
                // not readable: not one of ours
            }
        }

        return false;
    }

    private static async Task<string> ReadToEndAsync(Socket s)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var all = new MemoryStream();
        var buffer = new byte[4096];
        int n;
        while ((n = await s.ReceiveAsync(buffer, SocketFlags.None, cts.Token)) > 0)
            all.Write(buffer, 0, n);
        return Encoding.ASCII.GetString(all.ToArray());
    }

    [SkippableFact]
    public async Task SIGUSR2_upgrades_under_a_steady_request_loop_without_refusing_a_connection_and_a_killed_master_leaves_nothing()
    {
        var tlsPort = TestWorld.FreePort();
        string? live = null;
        var (d, _) = Start("upgrade", config =>
        {
            live = TestWorld.InstallSampleCertificates(Path.GetDirectoryName(config["vhosts"]!["a.localhost"]!["root"]!.GetValue<string>())!);
            config["listen"]!.AsArray().Add(new JsonObject { ["endpoint"] = $"127.0.0.1:{tlsPort}", ["protocol"] = "tls" });
            config["vhosts"]!["b.localhost"]!["tls"] = "terminate";
            config["vhosts"]!["b.localhost"]!["certDir"] = Path.Combine(live, "b.localhost");
            config["dispatcher"]!["stopGrace"] = "20s";
            // The master tells the old dispatcher's workers to finish once the longest prelude (request head or handshake)
            // its last connections may still be in has passed, and logs "drained and exited" only then: with the default
            // handshakeTimeout (10 s) that is 11 s after the upgrade, which this test waited out; at 3 s, 4 s.
            config["dispatcher"]!["handshakeTimeout"] = "3s";
        });
        var oldDispatcher = d.DispatcherPid;
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
        var oldWorker = d.WorkerPid("a");

        // Two steady loops, each request on a new connection: plain HTTP to a, HTTPS to b.
        long ok = 0;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var stopLoops = new CancellationTokenSource();
        async Task LoopAsync(HttpClient client, string url, string expected)
        {
            while (!stopLoops.IsCancellationRequested)
            {
                try
                {
                    var body = await client.GetStringAsync(new Uri(url), stopLoops.Token);
                    if (body == expected)
                        Interlocked.Increment(ref ok);
                    else
                        failures.Enqueue($"{url}: unexpected body '{body}'");
                }
                catch (OperationCanceledException) when (stopLoops.IsCancellationRequested)
                {
                }
                catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
                {
                    failures.Enqueue($"{url}: {e.GetType().Name}: {e.Message} {e.InnerException?.Message}");
                }
            }
        }

        using var plain = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.Zero, PooledConnectionIdleTimeout = TimeSpan.Zero });
        plain.DefaultRequestHeaders.Host = "a.localhost";
        plain.DefaultRequestHeaders.ConnectionClose = true;
        var ca = System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadCertificateFromFile(TestWorld.CaPath);
        using var tls = new HttpClient(new SocketsHttpHandler
        {
            PooledConnectionLifetime = TimeSpan.Zero,
            ConnectCallback = async (ctx, ct) =>
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await s.ConnectAsync("127.0.0.1", tlsPort, ct);
                return new NetworkStream(s, ownsSocket: true);
            },
            SslOptions = new System.Net.Security.SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, cert, chain, errors) =>
                {
                    if (cert is null || chain is null)
                        return false;
                    chain.ChainPolicy.TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust;
                    chain.ChainPolicy.CustomTrustStore.Add(ca);
                    chain.ChainPolicy.RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck;
                    return (errors & ~System.Net.Security.SslPolicyErrors.RemoteCertificateChainErrors) == 0 && chain.Build(new System.Security.Cryptography.X509Certificates.X509Certificate2(cert));
                },
            },
        });
        tls.DefaultRequestHeaders.ConnectionClose = true;
        var loops = new[]
        {
            LoopAsync(plain, $"http://127.0.0.1:{d.HttpPort}/", "A"),
            LoopAsync(tls, $"https://b.localhost:{tlsPort}/", "B"),
        };
        try
        {
            Assert.True(Tools.Eventually(() => Interlocked.Read(ref ok) >= 20, TimeSpan.FromSeconds(60)), $"the loops did not get going: {string.Join("; ", failures)}");

            Assert.Equal(0, Tools.Run("kill", "-USR2", d.MasterPid.ToString(CultureInfo.InvariantCulture)).ExitCode);
            var upgraded = d.WaitForLine(new Regex($@"Upgrade \(SIGUSR2\) complete: dispatchers {oldDispatcher} -> (?<new>\d+)"));
            var newDispatcher = int.Parse(upgraded.Groups["new"].Value, CultureInfo.InvariantCulture);
            d.WaitForLine(new Regex($@"Dispatcher {oldDispatcher} drained and exited \(exit code 0\)"));
            d.WaitForLine(new Regex($@"Worker {oldWorker} of pool a exited \(exit code 0\)"));
            var after = Interlocked.Read(ref ok);
            Assert.True(Tools.Eventually(() => Interlocked.Read(ref ok) >= after + 20, TimeSpan.FromSeconds(60)), "the loops stalled after the upgrade");
            Assert.False(Directory.Exists($"/proc/{oldDispatcher}"));
            Assert.True(Directory.Exists($"/proc/{newDispatcher}"));
            Assert.Equal((uint)TestWorld.DispatcherUid, uint.Parse(Tools.Status($"/proc/{newDispatcher}/status")["Uid"].Split('\t')[0], CultureInfo.InvariantCulture));
            _output.WriteLine($"{Interlocked.Read(ref ok)} requests served across the upgrade, {failures.Count} failed");
            Assert.Empty(failures);

            // A master killed outright: every process it started ends with it (their channels reach EOF).
            var family = ChildrenOf(d.MasterPid);
            _output.WriteLine($"master {d.MasterPid}, children {string.Join(", ", family)}");
            Assert.Contains(newDispatcher, family);
            Assert.Equal(0, Tools.Run("kill", "-KILL", d.MasterPid.ToString(CultureInfo.InvariantCulture)).ExitCode);
            d.WaitForExit();
            foreach (var pid in family)
                Assert.True(Tools.Eventually(() => !Directory.Exists($"/proc/{pid}")), $"process {pid} outlived the killed master");
        }
        finally
        {
            await stopLoops.CancelAsync();
            await Task.WhenAll(loops);
        }
    }

    [SkippableFact]
    public async Task A_worker_start_that_ends_after_its_dispatcher_was_upgraded_away_and_drained_is_abandoned_without_backoff()
    {
        // Pool b's workers wait in a privilege module (stage 1) until a file exists: the start a connection asks for is
        // held until the dispatcher that asked has been upgraded away and has drained. Its hand-over then finds the
        // dispatcher's channel closed (EPIPE): no failure of pool b (it once put the pool into backoff, and the next
        // connection got 503).
        var gate = string.Empty;
        var (d, _) = Start("upgrade-late-worker", config =>
        {
            var dir = Path.GetDirectoryName(config["vhosts"]!["b.localhost"]!["root"]!.GetValue<string>())!;
            gate = Path.Combine(dir, "gate-open");
            var modules = Path.Combine(dir, "gate-module");
            Directory.CreateDirectory(modules);
            File.SetUnixFileMode(modules, (UnixFileMode)0b111_101_101);
            var source = Path.Combine(modules, "gate.c");
            File.WriteAllText(source, $$"""
                #include <stddef.h>
                #include <stdio.h>
                #include <unistd.h>
                int validate(const char *config_json, char *error_buffer, size_t length) { (void)config_json; (void)error_buffer; (void)length; return 0; }
                int apply(const char *config_json, char *error_buffer, size_t length) {
                    (void)config_json;
                    for (int i = 0; i < 3000; i++) {
                        if (access("{{gate}}", F_OK) == 0)
                            return 0;
                        usleep(100000);
                    }
                    snprintf(error_buffer, length, "the gate stayed closed");
                    return 1;
                }
                """);
            var library = Path.Combine(modules, "libgate.so");
            var gcc = Tools.Run("gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", library, source);
            Assert.True(gcc.ExitCode == 0, $"gcc: {gcc.Stderr}");
            File.SetUnixFileMode(library, (UnixFileMode)0b111_101_101);
            config["modules"] = new JsonObject { ["gate"] = new JsonObject { ["library"] = library } };
            config["pools"]!["b"]!["modules"] = new JsonObject { ["gate"] = new JsonObject { ["at"] = "stage1" } };
            config["dispatcher"]!["stopGrace"] = "2s";
        });
        var oldDispatcher = d.DispatcherPid;
        var before = ChildrenOf(d.MasterPid).Count;
        using var waiting = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await waiting.ConnectAsync("127.0.0.1", d.HttpPort);
        await waiting.SendAsync("GET / HTTP/1.1\r\nHost: b.localhost\r\n\r\n"u8.ToArray());
        Assert.True(Tools.Eventually(() => ChildrenOf(d.MasterPid).Count > before, TimeSpan.FromSeconds(60)), "no worker of pool b was started");

        Assert.Equal(0, Tools.Run("kill", "-USR2", d.MasterPid.ToString(CultureInfo.InvariantCulture)).ExitCode);
        d.WaitForLine(new Regex($@"Upgrade \(SIGUSR2\) complete: dispatchers {oldDispatcher} -> \d+"));
        d.WaitForLine(new Regex($@"Dispatcher {oldDispatcher} drained and exited"));
        File.WriteAllText(gate, string.Empty);
        d.WaitForLine(new Regex($@"Worker \d+ for pool b abandoned: dispatcher {oldDispatcher} \(exited\) could not take it"));

        // No failure of pool b: no error, no backoff; the next connection (through the new dispatcher) is served.
        var next = Tools.Curl("--max-time", "60", "-H", "Host: b.localhost", $"http://127.0.0.1:{d.HttpPort}/");
        Assert.Equal((200, "B"), (next.Status, next.Body));
        Assert.DoesNotContain("Could not start a worker for pool b", d.Log, StringComparison.Ordinal);
        Assert.DoesNotContain("backing off", d.Log, StringComparison.Ordinal);
    }

    public void Dispose() => _dispatch?.Dispose();
}
