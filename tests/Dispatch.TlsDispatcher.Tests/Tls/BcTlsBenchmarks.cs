using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Security.Authentication;
using System.Text.RegularExpressions;
using Dispatch.TlsDispatcher.Tls;
using Xunit.Abstractions;

namespace Dispatch.TlsDispatcher.Tests.Tls;

[CollectionDefinition(nameof(BenchmarkCollection), DisableParallelization = true)]
public sealed class BenchmarkCollection
{
}

/// <summary>
/// Measurements printed to the test output (run with --logger "console;verbosity=detailed"; lines start with
/// "[bench]"); nothing here asserts a speed. Numbers are noisy on shared machines: the thread-CPU figures are the
/// least sensitive to other load. bench/engine.sh runs them; run-tests.sh leaves them out (--filter "Category!=Benchmark").
/// </summary>
[Collection(nameof(BenchmarkCollection))]
[Trait("Category", "Benchmark")]
public sealed partial class BcTlsBenchmarks
{
    private readonly ITestOutputHelper _output;

    public BcTlsBenchmarks(ITestOutputHelper output) => _output = output;

    private void Report(string line)
    {
        _output.WriteLine(line);
        Console.WriteLine("[bench] " + line);
    }

    private static TimeSpan ProcessCpu()
    {
        using Process self = Process.GetCurrentProcess();
        return self.TotalProcessorTime;
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out Timespec value);

    [StructLayout(LayoutKind.Sequential)]
    private struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    /// <summary>CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), in nanoseconds.</summary>
    private static long ThreadCpuNs()
    {
        _ = ClockGetTime(3, out Timespec t);
        return (t.Seconds * 1_000_000_000) + t.Nanoseconds;
    }

    /// <summary>
    /// The engine alone: BcTlsSession against an in-memory SslStream client; the server's work happens synchronously
    /// inside Offer, so its thread CPU time around Offer/ReadOutput is exactly the server's cost (no sockets, no client).
    /// </summary>
    [Fact]
    public async Task Handshake_cpu_engine_only()
    {
        foreach (SslProtocols protocol in new[] { SslProtocols.Tls13, SslProtocols.Tls12 })
        {
            foreach (BcKeyExchangeImplementation kx in new[] { BcKeyExchangeImplementation.DotNet, BcKeyExchangeImplementation.BouncyCastle })
            {
                foreach ((string name, BcServerCredentials credentials) in new[] { ("ecdsa.example", TestPki.Shared.EcdsaOnly), ("rsa.example", TestPki.Shared.RsaOnly) })
                {
                    await EngineHandshakesAsync(name, credentials, kx, protocol, 50);
                    const int N = 200;
                    (long ns, long bytes) = await EngineHandshakesAsync(name, credentials, kx, protocol, N);
                    Report($"handshake engine-only {protocol} {name,-14} kx={kx,-12} N={N}: {ns / 1e6 / N:F2} ms server thread CPU, {bytes / N / 1024.0:F1} KiB allocated per full handshake");
                }
            }
        }
    }

    /// <summary>The server's thread CPU (ns) and the bytes it allocated (the engine runs synchronously on this thread) over <paramref name="count"/> handshakes.</summary>
    private static async Task<(long Ns, long Bytes)> EngineHandshakesAsync(string name, BcServerCredentials credentials, BcKeyExchangeImplementation kx, SslProtocols protocol, int count)
    {
        long total = 0;
        long allocated = 0;
        byte[] buffer = new byte[64 * 1024];
        for (int i = 0; i < count; i++)
        {
            (Stream clientStream, MemoryDuplex.Endpoint pipe) = MemoryDuplex.Create();
            long a0 = GC.GetAllocatedBytesForCurrentThread();
            using var session = new BcTlsSession(credentials, ["http/1.1"], kx);
            allocated += GC.GetAllocatedBytesForCurrentThread() - a0;
            await using var ssl = new SslStream(clientStream);
            Task handshake = ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = name,
                EnabledSslProtocols = protocol,
                CertificateChainPolicy = TestPki.Shared.ChainPolicy(),
            });
            while (!session.HandshakeComplete)
            {
                int n = pipe.Read(buffer, TimeSpan.FromSeconds(10));
                Assert.True(n > 0);
                long t0 = ThreadCpuNs();
                long b0 = GC.GetAllocatedBytesForCurrentThread();
                session.Offer(buffer, 0, n);
                int output = session.ReadOutputToNetwork(buffer, 0, buffer.Length);
                allocated += GC.GetAllocatedBytesForCurrentThread() - b0;
                total += ThreadCpuNs() - t0;
                pipe.Write(buffer.AsSpan(0, output));
            }

            await handshake.WaitAsync(TimeSpan.FromSeconds(10));
        }

        return (total, allocated);
    }

    [GeneratedRegex(@"(\d+) connections in ([\d.]+)s")]
    private static partial Regex STimeConnections();

    /// <summary>
    /// Server CPU per full handshake, with openssl s_time as the client in another process: the CPU
    /// time of this test process over the run is all server (accept, ClientHello parse, handshake, close).
    /// </summary>
    [Fact]
    public async Task Handshake_cpu_with_openssl_s_time()
    {
        if (!ExternalTool.Exists("openssl"))
            return;
        foreach (BcKeyExchangeImplementation kx in new[] { BcKeyExchangeImplementation.DotNet, BcKeyExchangeImplementation.BouncyCastle })
        {
            await using var server = new TlsTestServer(["http/1.1"], kx);
            foreach ((string cipher, string[] options) in new[]
            {
                ("TLSv1.3 TLS_AES_128_GCM_SHA256 (ECDSA, X25519)", new[] { "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256" }),
                ("ECDHE-ECDSA-AES128-GCM-SHA256", new[] { "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256" }),
                ("ECDHE-RSA-AES128-GCM-SHA256", new[] { "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256" }),
            })
            {
                // Warm up (JIT, tiering).
                await ExternalTool.RunAsync("openssl", ["s_time", "-connect", $"127.0.0.1:{server.Port}", "-new", .. options, "-time", "1"], timeout: TimeSpan.FromSeconds(20));
                await DrainAsync(server);

                TimeSpan before = ProcessCpu();
                var watch = Stopwatch.StartNew();
                ExternalTool.Result result = await ExternalTool.RunAsync("openssl", ["s_time", "-connect", $"127.0.0.1:{server.Port}", "-new", .. options, "-time", "2"], timeout: TimeSpan.FromSeconds(30));
                watch.Stop();
                int served = await DrainAsync(server);
                TimeSpan cpu = ProcessCpu() - before;
                Match m = STimeConnections().Match(result.StdOut);
                string client = m.Success ? $"s_time: {m.Groups[1].Value} connections in {m.Groups[2].Value}s of its CPU" : "s_time output not understood";
                Report($"handshake s_time {cipher,-30} kx={kx,-12} {served} full handshakes, {served / watch.Elapsed.TotalSeconds:F0}/s wall: server process CPU {cpu.TotalMilliseconds / Math.Max(1, served):F2} ms/handshake ({client})");
            }
        }
    }

    private static async Task<int> DrainAsync(TlsTestServer server)
    {
        int count = 0;
        while (true)
        {
            try
            {
                await server.NextResultAsync(TimeSpan.FromMilliseconds(500));
                count++;
            }
            catch (OperationCanceledException)
            {
                return count;
            }
        }
    }

    /// <summary>In-process: N=200 handshakes from an SslStream client; the CPU figure includes the client's own cost.</summary>
    [Fact]
    public async Task Handshake_cpu_in_process_sslstream_client()
    {
        await using var server = new TlsTestServer(["http/1.1"]);
        foreach (string name in new[] { "ecdsa.example", "rsa.example" })
        {
            for (int i = 0; i < 20; i++)
                await OneHandshakeAsync(server.Port, name);
            await DrainAsync(server);

            const int N = 200;
            TimeSpan before = ProcessCpu();
            var watch = Stopwatch.StartNew();
            for (int i = 0; i < N; i++)
                await OneHandshakeAsync(server.Port, name);
            watch.Stop();
            await DrainAsync(server);
            TimeSpan cpu = ProcessCpu() - before;
            Report($"handshake in-process {name,-14} N={N}: {cpu.TotalMilliseconds / N:F2} ms CPU per handshake (client + server), {watch.Elapsed.TotalMilliseconds / N:F2} ms wall");
        }
    }

    private static async Task OneHandshakeAsync(int port, string name)
    {
        (TcpClient tcp, SslStream ssl) = await BcTlsServerTests.ConnectAsync(port, name, ["http/1.1"], SslProtocols.Tls12);
        using (tcp)
        await using (ssl)
            await ssl.ShutdownAsync();
    }

    /// <summary>Bulk through the whole stack (SslStream client in-process, 127.0.0.1, BcTlsStream server): CPU includes the client.</summary>
    [Fact]
    public async Task Bulk_throughput_through_sockets()
    {
        await using var server = new TlsTestServer(["http/1.1"]);
        foreach (TlsCipherSuite suite in new[] { TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 })
        {
            const long Bytes = 128L * 1024 * 1024;
            (TcpClient tcp, SslStream ssl) = await BcTlsServerTests.ConnectAsync(server.Port, "ecdsa.example", ["http/1.1"], SslProtocols.Tls12, [suite]);
            using (tcp)
            await using (ssl)
            {
                byte[] header = new byte[12];
                byte[] chunk = new byte[256 * 1024];

                // Warm-up.
                "SINK"u8.CopyTo(header);
                BinaryPrimitives.WriteInt64BigEndian(header.AsSpan(4), 8 * chunk.Length);
                await ssl.WriteAsync(header);
                for (int i = 0; i < 8; i++)
                    await ssl.WriteAsync(chunk);
                await ssl.ReadExactlyAsync(new byte[2]);

                // Client → server: the server decrypts.
                BinaryPrimitives.WriteInt64BigEndian(header.AsSpan(4), Bytes);
                TimeSpan cpu0 = ProcessCpu();
                var watch = Stopwatch.StartNew();
                await ssl.WriteAsync(header);
                for (long sent = 0; sent < Bytes; sent += chunk.Length)
                    await ssl.WriteAsync(chunk);
                await ssl.ReadExactlyAsync(new byte[2]);
                watch.Stop();
                TimeSpan cpu = ProcessCpu() - cpu0;
                Report($"bulk {suite} client->server (server decrypts): {Bytes / watch.Elapsed.TotalSeconds / 1e6:F0} MB/s wall, {Bytes / cpu.TotalSeconds / 1e6:F0} MB per CPU-second (client + server)");

                // Server → client: the server encrypts.
                "SRC "u8.CopyTo(header);
                BinaryPrimitives.WriteInt64BigEndian(header.AsSpan(4), Bytes);
                cpu0 = ProcessCpu();
                watch.Restart();
                await ssl.WriteAsync(header);
                for (long got = 0; got < Bytes;)
                {
                    int n = await ssl.ReadAsync(chunk);
                    Assert.True(n > 0);
                    got += n;
                }

                watch.Stop();
                cpu = ProcessCpu() - cpu0;
                Report($"bulk {suite} server->client (server encrypts): {Bytes / watch.Elapsed.TotalSeconds / 1e6:F0} MB/s wall, {Bytes / cpu.TotalSeconds / 1e6:F0} MB per CPU-second (client + server)");
            }

            await server.NextResultAsync();
        }
    }

    /// <summary>
    /// Bulk with curl as the client in another process, so this process's CPU time is the server's alone: a download
    /// (the server encrypts) and an upload (the server decrypts) of 256 MiB over one connection each.
    /// </summary>
    [Fact]
    public async Task Bulk_server_cpu_with_curl()
    {
        if (!ExternalTool.Exists("curl"))
            return;
        const long Bytes = 128L * 1024 * 1024;
        string upload = Path.Combine(TestPki.Shared.Directory, "upload.bin");
        await using (FileStream file = File.Create(upload))
            file.SetLength(Bytes);
        await using var server = new TlsTestServer(["http/1.1"]);

        // Warm-up (JIT, tiering) of the server's data path.
        await ExternalTool.RunAsync("curl", ["-sS", "--http1.1", "--cacert", TestPki.Shared.CaFile, "--resolve", $"ecdsa.example:{server.Port}:127.0.0.1", "-o", "/dev/null", $"https://ecdsa.example:{server.Port}/bytes/{32 << 20}"], timeout: TimeSpan.FromSeconds(60));
        await server.NextResultAsync();

        foreach (string cipher in new[] { "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305" })
        {
            string url = $"https://ecdsa.example:{server.Port}";
            string[] common = ["-sS", "--http1.1", "--ciphers", cipher, "--cacert", TestPki.Shared.CaFile, "--resolve", $"ecdsa.example:{server.Port}:127.0.0.1"];

            TimeSpan cpu0 = ProcessCpu();
            var watch = Stopwatch.StartNew();
            ExternalTool.Result download = await ExternalTool.RunAsync("curl", [.. common, "-o", "/dev/null", "-w", "%{size_download}", $"{url}/bytes/{Bytes}"], timeout: TimeSpan.FromSeconds(120));
            watch.Stop();
            await server.NextResultAsync();
            TimeSpan cpu = ProcessCpu() - cpu0;
            Assert.Equal(Bytes.ToString(CultureInfo.InvariantCulture), download.StdOut.Trim());
            Report($"bulk curl download {cipher,-30} (server encrypts): {Bytes / watch.Elapsed.TotalSeconds / 1e6:F0} MB/s wall, server {Bytes / cpu.TotalSeconds / 1e6:F0} MB per CPU-second");

            cpu0 = ProcessCpu();
            watch.Restart();
            ExternalTool.Result put = await ExternalTool.RunAsync("curl", [.. common, "-H", "Expect:", "-T", upload, $"{url}/upload"], timeout: TimeSpan.FromSeconds(120));
            watch.Stop();
            await server.NextResultAsync();
            cpu = ProcessCpu() - cpu0;
            Assert.Equal(Bytes.ToString(CultureInfo.InvariantCulture), put.StdOut.Trim());
            Report($"bulk curl upload   {cipher,-30} (server decrypts): {Bytes / watch.Elapsed.TotalSeconds / 1e6:F0} MB/s wall, server {Bytes / cpu.TotalSeconds / 1e6:F0} MB per CPU-second");
        }

        File.Delete(upload);
    }

    /// <summary>The record ciphers alone (what BouncyCastle calls per 16 KiB record).</summary>
    [Fact]
    public void Record_cipher_throughput()
    {
        foreach ((AeadKind kind, int keyLength, string name) in new[] { (AeadKind.AesGcm, 16, "AES-128-GCM"), (AeadKind.AesGcm, 32, "AES-256-GCM"), (AeadKind.ChaCha20Poly1305, 32, "ChaCha20-Poly1305") })
        {
            byte[] key = new byte[keyLength];
            byte[] nonce = new byte[12];
            byte[] aad = new byte[13];
            using var encrypt = new DotNetAeadCipherImpl(kind, encrypt: true);
            using var decrypt = new DotNetAeadCipherImpl(kind, encrypt: false);
            encrypt.SetKey(key);
            decrypt.SetKey(key);
            byte[] record = new byte[16384 + 16];
            byte[] plaintext = new byte[16384];
            void RoundTrip()
            {
                encrypt.Init(nonce, 16, aad);
                encrypt.DoFinal(aad, record, 0, plaintext.Length, record, 0);
                decrypt.Init(nonce, 16, aad);
                decrypt.DoFinal(aad, record, 0, record.Length, plaintext, 0);
            }

            for (int i = 0; i < 200; i++)
                RoundTrip();
            long bytes = 0;
            var watch = Stopwatch.StartNew();
            long cpu0 = ThreadCpuNs();
            while (watch.ElapsedMilliseconds < 1000)
            {
                RoundTrip();
                bytes += plaintext.Length;
            }

            double cpuSeconds = (ThreadCpuNs() - cpu0) / 1e9;
            Report($"record cipher {name,-18}: {bytes / cpuSeconds / 1e6:F0} MB per thread-CPU-second encrypt+decrypt ({bytes / watch.Elapsed.TotalSeconds / 1e6:F0} MB/s wall; 16 KiB records)");
        }
    }
}
