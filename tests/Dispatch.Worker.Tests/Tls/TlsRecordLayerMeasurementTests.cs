using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using Dispatch.Wire.Tls;
using Dispatch.Worker.Tests.Support;
using Dispatch.Worker.Tls;
using Org.BouncyCastle.Tls;
using Serilog;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests.Tls;

/// <summary>What the record layer costs and holds, measured with nothing else running in the test process.</summary>
[Collection(MeasurementCollection.Name)]
public sealed class TlsRecordLayerMeasurementTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly TempDir _dir = new();
    private Harness _harness = null!;

    public async Task InitializeAsync()
    {
        _dir.Write("site/index.html", "<h1>home</h1>");
        _dir.Write("site/ten.txt", "0123456789");
        _harness = await Harness.StartAsync(Harness.Vhost("a.localhost", _dir.Combine("site")));
    }

    public async Task DisposeAsync()
    {
        await _harness.DisposeAsync();
        _dir.Dispose();
    }

    [Fact]
    public async Task An_idle_keep_alive_connection_holds_no_buffer()
    {
        const int Requests = 300;
        using var connection = await HandedTlsConnection.OpenAsync(_harness.Server, TlsSessionState.Tls13, CipherSuite.TLS_AES_128_GCM_SHA256);
        using var raw = connection.Raw();
        var rented = TlsBufferPool.Rented;
        for (var i = 0; i < 20; i++)
        {
            await raw.SendTextAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
            Assert.Equal(200, (await raw.ReceiveResponseAsync()).Status);
        }

        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var allocated = GC.GetTotalAllocatedBytes(precise: true);
        for (var i = 0; i < Requests; i++)
        {
            await raw.SendTextAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
            Assert.Equal(200, (await raw.ReceiveResponseAsync()).Status);
        }

        output.WriteLine(
            $"{Requests} keep-alive requests, TLS 1.3 record layer + Kestrel + the test's own client in one process: "
            + $"{(Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMicroseconds / Requests:F0} µs CPU and "
            + $"{(GC.GetTotalAllocatedBytes(precise: true) - allocated) / Requests} bytes allocated per request");

        // The layer did rent buffers while requests were in flight; idle now, it holds none.
        Assert.True(TlsBufferPool.Rented > rented);
        var watch = Stopwatch.StartNew();
        while (TlsBufferPool.Outstanding != 0 && watch.Elapsed < TimeSpan.FromSeconds(20))
        {
            await Task.Delay(20);
        }

        Assert.Equal(0, TlsBufferPool.Outstanding);

        // And the connection still works.
        await raw.SendTextAsync("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("<h1>home</h1>", (await raw.ReceiveResponseAsync()).Text);
    }

    [Theory]
    [InlineData(TlsSessionState.Tls13, 0x1301)]
    [InlineData(TlsSessionState.Tls12, 0xC02F)]
    public async Task The_layer_alone_per_request_and_per_megabyte(ushort version, int suite)
    {
        // The layer over in-memory pipes, the "client" sealing and opening records into buffers it reuses: what is left
        // is the layer's own cost per round trip (a 100-byte request, a 1 KiB response) and per MiB sent.
        var keyLength = suite == 0x1301 ? 32 : 16;
        var ivLength = version == TlsSessionState.Tls13 ? 0 : 4;
        var secrets = Enumerable.Range(0, 4).Select(i => Enumerable.Repeat((byte)(i + 1), i < 2 ? keyLength : ivLength).ToArray()).ToArray();
        var session = new TlsSessionState(version, (ushort)suite, [.. secrets[0]], [.. secrets[1]], [.. secrets[2]], [.. secrets[3]], 0, 0);
        using var clientWriter = TlsRecordProtection.Create(version, (ushort)suite, secrets[0], secrets[2], 0);
        using var clientReader = TlsRecordProtection.Create(version, (ushort)suite, secrets[1], secrets[3], 0);
        var toServer = new Pipe();
        var toClient = new Pipe();
        using var log = new LoggerConfiguration().CreateLogger();
        var layer = TlsRecordLayer.Start(new Duplex(toServer.Reader, toClient.Writer), session, "measure", log);
        await using (layer)
        {
            var request = new byte[clientWriter.RecordLength(100)];
            var requestPlaintext = new byte[100];
            var response = new byte[1024];
            var opened = new byte[TlsRecordProtection.MaxRecord];
            var header = new byte[5];

            async Task RoundTripAsync(int responseLength)
            {
                var length = clientWriter.Encrypt(TlsContentType.ApplicationData, requestPlaintext, request);
                await toServer.Writer.WriteAsync(request.AsMemory(0, length));
                var got = 0;
                while (got < 100)
                {
                    var read = await layer.Input.ReadAsync();
                    got += (int)read.Buffer.Length;
                    layer.Input.AdvanceTo(read.Buffer.End);
                }

                // The client reads while the layer writes (the pipes push back at 64 KiB).
                var reading = ReceiveAsync(responseLength);
                for (var sent = 0; sent < responseLength; sent += response.Length)
                {
                    await layer.Output.WriteAsync(response);
                }

                await reading;
            }

            async Task ReceiveAsync(int responseLength)
            {
                await Task.Yield();
                var received = 0;
                while (received < responseLength)
                {
                    var read = await toClient.Reader.ReadAsync();
                    var buffer = read.Buffer;
                    while (buffer.Length >= 5)
                    {
                        buffer.Slice(0, 5).CopyTo(header);
                        var total = 5 + ((header[3] << 8) | header[4]);
                        if (buffer.Length < total)
                        {
                            break;
                        }

                        buffer.Slice(0, total).CopyTo(opened);
                        Assert.Equal(TlsContentType.ApplicationData, clientReader.Decrypt(opened.AsSpan(0, total), out var plaintext));
                        received += plaintext.GetOffsetAndLength(total).Length;
                        buffer = buffer.Slice(total);
                    }

                    toClient.Reader.AdvanceTo(buffer.Start, buffer.End);
                }
            }

            for (var i = 0; i < 200; i++)
            {
                await RoundTripAsync(1024);
            }

            const int Rounds = 5000;
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            var allocated = GC.GetTotalAllocatedBytes(precise: true);
            for (var i = 0; i < Rounds; i++)
            {
                await RoundTripAsync(1024);
            }

            var perRequestCpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMicroseconds / Rounds;
            var perRequestBytes = (GC.GetTotalAllocatedBytes(precise: true) - allocated) / Rounds;

            const int Megabytes = 64;
            cpu = Process.GetCurrentProcess().TotalProcessorTime;
            await RoundTripAsync(Megabytes << 20);
            var perMegabyte = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds / Megabytes;
            output.WriteLine(
                $"TLS 0x{version:X4} suite 0x{suite:X4}, layer + in-memory client: {perRequestCpu:F1} µs CPU and {perRequestBytes} bytes allocated per "
                + $"round trip (100 B up, 1 KiB down); {perMegabyte:F2} ms CPU per MiB down");

            // Sanity, not speed: a round trip allocates far less than one record's buffer (buffers come from the pool).
            Assert.InRange(perRequestBytes, 0, 4096);
        }

        await toServer.Writer.CompleteAsync();
    }

    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
