using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// TLS 2: the dispatcher completes the handshake (BouncyCastle, TLS 1.3 and 1.2) and hands the client's socket with
/// the session's traffic secrets to the tenant's worker, which runs the record layer. Real clients only.
/// </summary>
public sealed class TlsHandOffTests : IDisposable
{
    private const string Body = "<h1>tenant A, handed</h1>";
    private readonly ITestOutputHelper _output;
    private readonly List<IDisposable> _cleanup = [];

    public TlsHandOffTests(ITestOutputHelper output) => _output = output;

    private sealed record Setup(DispatchInstance Dispatch, int TlsPort, string Directory, string RootA, string Live);

    private Setup Start(string name, Action<JsonObject, string, string>? adjust = null)
    {
        var site = TwoTenantSite.Create(name, Body, "<h1>tenant B</h1>");
        var rootA = site.RootA;
        var big = new byte[10 << 20];
        new Random(11).NextBytes(big);
        File.WriteAllBytes(Path.Combine(rootA, "big.bin"), big);
        TestWorld.Chown(Path.Combine(rootA, "big.bin"), TestWorld.TenantA, recursive: false);
        var cgi = site.CgiTree(new Dictionary<string, string>
        {
            ["sha.sh"] = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nsha256sum | cut -d' ' -f1\n",
        });
        site.Terminate("a", rsaToo: true)["cgi"] = new JsonObject { ["/cgi-bin/"] = cgi };
        site.Terminate("b", rsaToo: true);
        adjust?.Invoke(site.Config, site.Directory, site.Live);
        var dispatch = site.StartReady(_output);
        _cleanup.Add(dispatch);
        return new Setup(dispatch, site.TlsPort, site.Directory, rootA, site.Live);
    }

    private static string Get(Setup s, params string[] extra)
    {
        var r = Tools.RunWithInput(
            "GET / HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n",
            "openssl",
            ["s_client", "-connect", $"127.0.0.1:{s.TlsPort}", "-servername", "a.localhost", "-CAfile", TestWorld.CaPath, "-ign_eof", .. extra]);
        return r.Stdout + r.Stderr;
    }

    [SkippableFact]
    public void Every_version_group_suite_and_certificate_serves_a_request_over_the_handed_session()
    {
        var s = Start("handoff-matrix");
        var failures = new List<string>();
        void Expect(string what, string output, params string[] needles)
        {
            foreach (var needle in needles)
            {
                if (!output.Contains(needle, StringComparison.Ordinal))
                {
                    failures.Add($"{what}: no '{needle}'");
                    _output.WriteLine($"--- {what}\n{output}");
                    return;
                }
            }
        }

        foreach (var suite in new[] { "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256" })
        {
            foreach (var (group, temp) in new[] { ("X25519", "Server Temp Key: X25519"), ("P-256", "Server Temp Key: ECDH, prime256v1") })
            {
                foreach (var (sigalg, peer) in new[] { ("ecdsa_secp256r1_sha256", "Peer signature type: ECDSA"), ("rsa_pss_rsae_sha256", "Peer signature type: RSA-PSS") })
                {
                    var output = Get(s, "-tls1_3", "-ciphersuites", suite, "-groups", group, "-sigalgs", sigalg);
                    Expect($"TLS 1.3 {suite} {group} {sigalg}", output, $"New, TLSv1.3, Cipher is {suite}", temp, peer, "Verify return code: 0 (ok)", "HTTP/1.1 200 OK", Body);
                }
            }
        }

        foreach (var suite in new[]
        {
            "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305",
        })
        {
            // In TLS 1.2 the client's groups also bound the curve of an ECDSA certificate (RFC 8422 5.1): a client
            // that lists X25519 alone cannot take our P-256 certificate, so X25519 is offered first, P-256 second.
            foreach (var (group, temp) in new[] { ("X25519:P-256", "Server Temp Key: X25519"), ("P-256", "Server Temp Key: ECDH, prime256v1") })
            {
                var output = Get(s, "-tls1_2", "-cipher", suite, "-groups", group);
                Expect($"TLS 1.2 {suite} {group}", output, $"New, TLSv1.2, Cipher is {suite}", temp, "Verify return code: 0 (ok)", "HTTP/1.1 200 OK", Body);
            }
        }

        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [SkippableFact]
    public void A_KeyUpdate_typed_into_s_client_keeps_the_connection_working_both_ways()
    {
        var s = Start("handoff-keyupdate");
        var psi = new ProcessStartInfo("openssl")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { "s_client", "-connect", $"127.0.0.1:{s.TlsPort}", "-servername", "a.localhost", "-CAfile", TestWorld.CaPath, "-tls1_3", "-crlf", "-msg" })
            psi.ArgumentList.Add(arg);
        using var client = Process.Start(psi)!;
        var output = new StringBuilder();
        var gate = new object();
        // Read raw (not by line): a response body need not end with a newline.
        async Task PumpAsync(Stream from)
        {
            var chunk = new byte[4096];
            int n;
            while ((n = await from.ReadAsync(chunk)) > 0)
            {
                lock (gate)
                    output.Append(Encoding.UTF8.GetString(chunk, 0, n));
            }
        }

        var pumps = Task.WhenAll(PumpAsync(client.StandardOutput.BaseStream), PumpAsync(client.StandardError.BaseStream));
        // The pumps append while the test reads: every read of the text under the lock (an assertion's message too).
        string Text()
        {
            lock (gate)
                return output.ToString();
        }

        int Count(string needle) => Text().Split(needle).Length - 1;

        try
        {
            // Each line is sent as typed (-crlf); a line that is just "k" or "K" is s_client's command, not data.
            void Request(int expected)
            {
                client.StandardInput.Write("GET / HTTP/1.1\nHost: a.localhost\n\n");
                client.StandardInput.Flush();
                Assert.True(Tools.Eventually(() => Count(Body) >= expected), $"no answer {expected}:\n{Text()}");
            }

            Assert.True(Tools.Eventually(() => Count("Verify return code: 0 (ok)") > 0), Text());
            Request(1);
            client.StandardInput.Write("k\n"); // KeyUpdate, update_not_requested: the server's read key moves on
            client.StandardInput.Flush();
            Assert.True(Tools.Eventually(() => Count("KEYUPDATE") >= 1), Text());
            Request(2);
            client.StandardInput.Write("K\n"); // update_requested: the server must update its write key too
            client.StandardInput.Flush();
            Assert.True(Tools.Eventually(() => Count("KEYUPDATE") >= 2), Text());
            Request(3);

            // The server answered update_requested with a KeyUpdate of its own, and its records after it are read
            // under the new key (request 3's answer above, and the next one).
            Assert.True(Tools.Eventually(() => Count("<<< TLS 1.3, Handshake [length 0005], KeyUpdate") >= 1), Text());
            Request(4);
            lock (gate)
                Assert.DoesNotContain("alert", output.ToString(), StringComparison.OrdinalIgnoreCase);
        }
        finally
        {
            client.StandardInput.Close();
            if (!client.WaitForExit(10_000))
                client.Kill();
            pumps.Wait(TimeSpan.FromSeconds(10));
            lock (gate)
                _output.WriteLine(output.ToString());
        }
    }

    [SkippableTheory]
    [InlineData("--tlsv1.3", "--tls-max", "1.3")]
    [InlineData("--tlsv1.2", "--tls-max", "1.2")]
    public void Ten_MiB_down_and_ten_MiB_up_arrive_intact(string min, string maxFlag, string max)
    {
        var s = Start("handoff-bulk");
        var tls = new[] { min, maxFlag, max, "--cacert", TestWorld.CaPath, "--resolve", $"a.localhost:{s.TlsPort}:127.0.0.1" };
        var target = Path.Combine(Path.GetTempPath(), $"dispatch-dl-{Guid.NewGuid():N}");
        var upload = Path.Combine(Path.GetTempPath(), $"dispatch-up-{Guid.NewGuid():N}");
        try
        {
            var r = Tools.Run("curl", ["-sS", "-w", "%{ssl_verify_result}", "-o", target, .. tls, $"https://a.localhost:{s.TlsPort}/big.bin"]);
            Assert.True(r.ExitCode == 0, r.Stderr);
            Assert.Equal(SHA256.HashData(File.ReadAllBytes(Path.Combine(s.RootA, "big.bin"))), SHA256.HashData(File.ReadAllBytes(target)));

            var data = new byte[10 << 20];
            new Random(5).NextBytes(data);
            File.WriteAllBytes(upload, data);
            var sha = Tools.Curl([.. tls, "--data-binary", "@" + upload, "-H", "Content-Type: application/octet-stream", $"https://a.localhost:{s.TlsPort}/cgi-bin/sha.sh"]);
            Assert.Equal(200, sha.Status);
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)), sha.Body.Trim());
        }
        finally
        {
            File.Delete(target);
            File.Delete(upload);
        }
    }

    [SkippableFact]
    public async Task After_the_hand_off_the_dispatcher_holds_no_descriptor_of_the_connection_and_the_worker_does()
    {
        var s = Start("handoff-fds");
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, s.TlsPort);
        await using var tls = new SslStream(tcp.GetStream(), leaveInnerStreamOpen: false);
        await tls.AuthenticateAsClientAsync(ClientOptions());
        Assert.Equal(System.Security.Authentication.SslProtocols.Tls13, tls.SslProtocol);
        Assert.Contains(Body, await RequestAsync(tls), StringComparison.Ordinal);

        var clientPort = ((IPEndPoint)tcp.Client.LocalEndPoint!).Port;
        var inode = ServerSideInode(s.TlsPort, clientPort);
        Assert.NotNull(inode);
        var socket = $"socket:[{inode}]";
        Assert.DoesNotContain(socket, Tools.Descriptors(s.Dispatch.DispatcherPid).Values);
        var holders = Directory.EnumerateDirectories("/proc")
            .Select(p => int.TryParse(Path.GetFileName(p), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) ? pid : 0)
            .Where(pid => pid > 0 && pid != Environment.ProcessId)
            .Where(pid =>
            {
                try
                {
                    return Tools.Descriptors(pid).ContainsValue(socket);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    return false;
                }
            })
            .ToList();
        var holder = Assert.Single(holders);
        Assert.Contains("Worker", File.ReadAllText($"/proc/{holder}/cmdline"), StringComparison.Ordinal);
        Assert.Equal(TestWorld.TenantA.ToString(CultureInfo.InvariantCulture), Tools.Status($"/proc/{holder}/status")["Uid"].Split('\t')[0]);

        // The connection goes on without the dispatcher.
        Assert.Contains(Body, await RequestAsync(tls), StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task Idle_TLS_connections_cost_the_worker_and_not_the_dispatcher()
    {
        const int Connections = 2000;
        var s = Start("handoff-idle", (config, _, _) =>
        {
            config["pools"]!["a"]!["limits"] = new JsonObject { ["nofile"] = 8192 };
        });
        var clients = new List<(TcpClient Tcp, SslStream Tls)>();
        try
        {
            // Warm both processes up (JIT, pools, the GC heap's working size) with as many connections, then closed.
            await OpenAsync(clients, s.TlsPort, Connections);
            Close(clients);
            var dispatcher = s.Dispatch.DispatcherPid;
            var worker = WorkerPid(s);
            var (dispatcherBefore, workerBefore) = (Rss(dispatcher), Rss(worker));
            var fdsBefore = Tools.DescriptorCount(dispatcher);

            await OpenAsync(clients, s.TlsPort, Connections);
            var (dispatcherAfter, workerAfter) = (Rss(dispatcher), Rss(worker));
            var fdsAfter = Tools.DescriptorCount(dispatcher);
            var dispatcherPer = (dispatcherAfter - dispatcherBefore) / (double)Connections;
            var workerPer = (workerAfter - workerBefore) / (double)Connections;
            _output.WriteLine($"{Connections} idle TLS connections: dispatcher RSS {dispatcherBefore} -> {dispatcherAfter} KiB ({dispatcherPer:F2} KiB each), fds {fdsBefore} -> {fdsAfter}; worker RSS {workerBefore} -> {workerAfter} KiB ({workerPer:F2} KiB each)");
            Assert.True(fdsAfter < fdsBefore + 16, $"the dispatcher holds descriptors for idle connections: {fdsBefore} -> {fdsAfter}");
            // The descriptor count above is the exact proof that nothing of a handed connection stays; RSS is the GC
            // heap's working size, which still varies after the warm-up (0.33 and 0.47 KiB each in two runs here, 2.61
            // once on a fresh clone under load, where the old bound of 2.0 failed). A kept session (BouncyCastle's
            // protocol object, its record buffers, the secrets) would cost more than this bound.
            Assert.True(dispatcherPer < 4.0, $"the dispatcher grew {dispatcherPer:F2} KiB per idle connection");
            Assert.True(Tools.DescriptorCount(worker) >= Connections, "the worker does not hold the connections");

            // Every one of them still works.
            foreach (var (_, tls) in clients.Take(20))
                Assert.Contains(Body, await RequestAsync(tls), StringComparison.Ordinal);
        }
        finally
        {
            Close(clients);
        }
    }

    /// <summary>A .NET client that trusts the sample CA only, speaking HTTP/1.1.</summary>
    private static SslClientAuthenticationOptions ClientOptions() => new()
    {
        TargetHost = "a.localhost",
        ApplicationProtocols = [SslApplicationProtocol.Http11],
        CertificateChainPolicy = TestWorld.SampleCaChainPolicy(),
    };

    private static int WorkerPid(Setup s)
    {
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
                continue;
            try
            {
                var status = Tools.Status($"/proc/{pid}/status");
                if (status["PPid"] == s.Dispatch.MasterPid.ToString(CultureInfo.InvariantCulture) && status["Uid"].Split('\t')[0] == TestWorld.TenantA.ToString(CultureInfo.InvariantCulture))
                    return pid;
            }
            catch (Exception e) when (e is IOException or KeyNotFoundException)
            {
                // Gone while we looked.
            }
        }

        throw new InvalidOperationException("no worker of pool a");
    }

    private static long Rss(int pid) => long.Parse(Tools.Status($"/proc/{pid}/status")["VmRSS"].Split(' ')[0], CultureInfo.InvariantCulture);

    private static async Task OpenAsync(List<(TcpClient, SslStream)> clients, int port, int count)
    {
        using var gate = new SemaphoreSlim(8);
        var opened = await Task.WhenAll(Enumerable.Range(0, count).Select(async _ =>
        {
            await gate.WaitAsync();
            try
            {
                var tcp = new TcpClient();
                await tcp.ConnectAsync(IPAddress.Loopback, port);
                var tls = new SslStream(tcp.GetStream(), leaveInnerStreamOpen: false);
                await tls.AuthenticateAsClientAsync(ClientOptions());
                Assert.Contains(Body, await RequestAsync(tls), StringComparison.Ordinal);
                return (tcp, tls);
            }
            finally
            {
                gate.Release();
            }
        }));
        clients.AddRange(opened);
    }

    private static void Close(List<(TcpClient Tcp, SslStream Tls)> clients)
    {
        foreach (var (tcp, tls) in clients)
        {
            tls.Dispose();
            tcp.Dispose();
        }

        clients.Clear();
    }

    /// <summary>One keep-alive GET / on an open TLS stream; returns the response (head and body).</summary>
    private static async Task<string> RequestAsync(SslStream tls)
    {
        await tls.WriteAsync("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n"u8.ToArray());
        var buffer = new byte[4096];
        var text = new StringBuilder();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (!text.ToString().Contains(Body, StringComparison.Ordinal))
        {
            var n = await tls.ReadAsync(buffer, deadline.Token);
            if (n == 0)
                break;
            text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }

        return text.ToString();
    }

    /// <summary>The inode of the accepted (server-side) socket of a loopback TCP connection, from /proc/net/tcp.</summary>
    private static string? ServerSideInode(int serverPort, int clientPort)
    {
        foreach (var line in File.ReadLines("/proc/net/tcp").Skip(1))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (int.Parse(f[1].Split(':')[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture) == serverPort
                && int.Parse(f[2].Split(':')[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture) == clientPort
                && f[3] == "01"
                && f[9] != "0")
                return f[9];
        }

        return null;
    }

    public void Dispose()
    {
        foreach (var item in _cleanup)
            item.Dispose();
    }
}
