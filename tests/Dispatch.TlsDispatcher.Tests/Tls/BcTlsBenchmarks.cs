using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net.Security;
using System.Net.Sockets;
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
/// Measurements printed to the test output (run with --logger "console;verbosity=detailed"); nothing
/// here asserts a speed. Numbers are noisy on shared machines.
/// </summary>
[Collection(nameof(BenchmarkCollection))]
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
            foreach (string cipher in new[] { "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256" })
            {
                // Warm up (JIT, tiering).
                await ExternalTool.RunAsync("openssl", ["s_time", "-connect", $"127.0.0.1:{server.Port}", "-new", "-tls1_2", "-cipher", cipher, "-time", "1"], timeout: TimeSpan.FromSeconds(20));
                await DrainAsync(server);

                TimeSpan before = ProcessCpu();
                ExternalTool.Result result = await ExternalTool.RunAsync("openssl", ["s_time", "-connect", $"127.0.0.1:{server.Port}", "-new", "-tls1_2", "-cipher", cipher, "-time", "3"], timeout: TimeSpan.FromSeconds(30));
                int served = await DrainAsync(server);
                TimeSpan cpu = ProcessCpu() - before;
                Match m = STimeConnections().Match(result.StdOut);
                int connections = m.Success ? int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : served;
                double seconds = m.Success ? double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) : 3;
                Report($"handshake {cipher,-30} kx={kx,-12} {connections} full handshakes in {seconds:F1}s ({connections / seconds:F0}/s): server CPU {cpu.TotalMilliseconds / Math.Max(1, served):F2} ms/handshake ({served} served)");
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

    /// <summary>Bulk through the whole stack (SslStream client in-process, 127.0.0.1, BcTlsStream server).</summary>
    [Fact]
    public async Task Bulk_throughput_through_sockets()
    {
        await using var server = new TlsTestServer(["http/1.1"]);
        foreach (TlsCipherSuite suite in new[] { TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 })
        {
            const long Bytes = 256L * 1024 * 1024;
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

    /// <summary>The record ciphers alone (what BouncyCastle calls per 16 KiB record).</summary>
    [Fact]
    public void Record_cipher_throughput()
    {
        foreach ((AeadKind kind, int keyLength, string name) in new[] { (AeadKind.AesGcm, 16, "AES-128-GCM"), (AeadKind.AesGcm, 32, "AES-256-GCM"), (AeadKind.ChaCha20Poly1305, 32, "ChaCha20-Poly1305") })
        {
            int ivLength = kind == AeadKind.AesGcm ? 4 : 12;
            byte[] key = new byte[keyLength];
            byte[] iv = new byte[ivLength];
            using var cipher = new DotNetAeadCipher(kind, key, iv, key, iv, 0x0303);
            byte[] plaintext = new byte[16384];
            long seq = 0;
            for (int i = 0; i < 200; i++)
                cipher.DecodeCiphertext(seq, 23, cipher.EncodePlaintext(seq, 23, plaintext, 0, plaintext.Length), 0, plaintext.Length + (kind == AeadKind.AesGcm ? 24 : 16));
            long bytes = 0;
            var watch = Stopwatch.StartNew();
            while (watch.ElapsedMilliseconds < 1000)
            {
                byte[] record = cipher.EncodePlaintext(++seq, 23, plaintext, 0, plaintext.Length);
                cipher.DecodeCiphertext(seq, 23, record, 0, record.Length);
                bytes += plaintext.Length;
            }

            Report($"record cipher {name,-18}: {bytes / watch.Elapsed.TotalSeconds / 1e6:F0} MB/s encrypt+decrypt (16 KiB records, one core)");
        }
    }
}
