using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using Dispatch.Wire.Tls;
using Dispatch.Worker.Tests.Support;
using Dispatch.Worker.Tls;
using Org.BouncyCastle.Tls;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests.Tls;

/// <summary>
/// What an idle handed TLS connection holds in the worker (docs/operations.md, "Memory per idle connection"): the
/// managed heap over many connections held idle, right after the hand-off and after one keep-alive request each, and
/// the record layer's buffers (none while idle).
/// </summary>
[Collection(MeasurementCollection.Name)]
public sealed class TlsIdleMemoryTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int Connections = 200;
    private readonly TempDir _dir = new();
    private Harness _harness = null!;

    public async Task InitializeAsync()
    {
        _dir.Write("site/ten.txt", "0123456789");
        _harness = await Harness.StartAsync(Harness.Vhost("a.localhost", _dir.Combine("site")));
    }

    public async Task DisposeAsync()
    {
        await _harness.DisposeAsync();
        _dir.Dispose();
    }

    [Theory]
    [InlineData(TlsSessionState.Tls13, 0x1301)]
    [InlineData(TlsSessionState.Tls12, 0xC02B)]
    public async Task Idle_connections_hold_no_buffer_and_little_heap(ushort version, int suite)
    {
        // Warm-up: the first connections build what every connection shares (Kestrel's, the pools').
        foreach (var warm in await OpenAsync(8, version, suite, 1000))
        {
            await warm.GetAsync();
            warm.Dispose();
        }

        await WaitForAsync(() => _harness.Server.OpenConnections == 0);
        var baseline = _harness.CollectedHeap();
        var clients = await OpenAsync(Connections, version, suite, 2000);
        try
        {
            await WaitForAsync(() => _harness.Server.OpenConnections == Connections);

            // Handshake only: the worker waits for the first request of each. No buffer of the record layer is out.
            await WaitForAsync(() => TlsBufferPool.Outstanding == 0);
            Assert.Equal(0, TlsBufferPool.Outstanding);
            var handed = _harness.CollectedHeap();
            var rented = TlsBufferPool.Rented;

            foreach (var client in clients)
            {
                await client.GetAsync();
            }

            // After one request each: the record layer rented while the requests were in flight, and gave it all back.
            Assert.True(TlsBufferPool.Rented > rented);
            await WaitForAsync(() => TlsBufferPool.Outstanding == 0);
            Assert.Equal(0, TlsBufferPool.Outstanding);
            var served = _harness.CollectedHeap();

            var perHanded = (handed - baseline) / Connections;
            var perServed = (served - baseline) / Connections;
            output.WriteLine(
                $"TLS 0x{version:X4}, {Connections} idle handed connections, managed heap per connection (worker + the test's small client): "
                + $"{perHanded} bytes after the hand-off, {perServed} bytes after one keep-alive GET");

            // Bounds above what was measured (13 and 20 KB, the test's client included; docs/operations.md): a record's
            // buffer (16 KiB) kept per idle connection would cross them.
            // Upper bounds only: the heap is the whole test process's, and something else let go of memory between two
            // measurements once (CI, -9466 bytes per connection: -1.9 MB, such as arrays the shared pool dropped at one
            // of the collections). Less than nothing per connection is that noise, not a finding.
            Assert.True(perHanded <= 16 * 1024, $"{perHanded} bytes per handed connection");
            Assert.True(perServed <= 24 * 1024, $"{perServed} bytes per served connection");
        }
        finally
        {
            foreach (var client in clients)
            {
                client.Dispose();
            }
        }

        await WaitForAsync(() => _harness.Server.OpenConnections == 0);
    }

    private async Task<List<MiniClient>> OpenAsync(int count, ushort version, int suite, long firstId)
    {
        var clients = new List<MiniClient>(count);
        for (var i = 0; i < count; i++)
        {
            // The BouncyCastle client is dropped after the handshake: only the socket and the keys stay on this side.
            // (its stream does not own the socket).
            var connection = await HandedTlsConnection.OpenAsync(_harness.Server, version, suite, id: firstId + i);
            clients.Add(new MiniClient(connection.Socket, connection.Keys));
        }

        return clients;
    }

    private static async Task WaitForAsync(Func<bool> condition)
    {
        var watch = Stopwatch.StartNew();
        while (!condition() && watch.Elapsed < TimeSpan.FromSeconds(30))
        {
            await Task.Delay(20);
        }
    }

    /// <summary>A client with no buffer of its own between requests: a socket and the keys.</summary>
    private sealed class MiniClient(Socket socket, TlsSessionState keys) : IDisposable
    {
        private readonly TlsRecordProtection _writer = TlsRecordProtection.Create(keys.Version, keys.CipherSuite, keys.ClientSecret, keys.ClientIv, keys.ReadSequence);
        private readonly TlsRecordProtection _reader = TlsRecordProtection.Create(keys.Version, keys.CipherSuite, keys.ServerSecret, keys.ServerIv, keys.WriteSequence);

        public async Task GetAsync()
        {
            var request = Encoding.ASCII.GetBytes("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
            var record = new byte[_writer.RecordLength(request.Length)];
            var length = _writer.Encrypt(TlsContentType.ApplicationData, request, record);
            await socket.SendAsync(record.AsMemory(0, length), SocketFlags.None);
            var received = new List<byte>();
            var text = new StringBuilder();
            var chunk = new byte[4096];
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            while (!text.ToString().EndsWith("0123456789", StringComparison.Ordinal))
            {
                var n = await socket.ReceiveAsync(chunk, SocketFlags.None, timeout.Token);
                Assert.NotEqual(0, n);
                received.AddRange(chunk.AsSpan(0, n));
                while (received.Count >= 5 && received.Count >= 5 + ((received[3] << 8) | received[4]))
                {
                    var total = 5 + ((received[3] << 8) | received[4]);
                    var bytes = received.GetRange(0, total).ToArray();
                    received.RemoveRange(0, total);
                    Assert.Equal(TlsContentType.ApplicationData, _reader.Decrypt(bytes, out var plaintext));
                    text.Append(Encoding.ASCII.GetString(bytes.AsSpan()[plaintext]));
                }
            }

            Assert.StartsWith("HTTP/1.1 200", text.ToString(), StringComparison.Ordinal);
        }

        public void Dispose()
        {
            socket.Dispose();
            _writer.Dispose();
            _reader.Dispose();
        }
    }
}
