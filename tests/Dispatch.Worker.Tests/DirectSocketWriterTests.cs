using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;

namespace Dispatch.Worker.Tests;

/// <summary>Plain HTTP/1 output straight to the socket: static files by sendfile, everything else by send.</summary>
public sealed class DirectSocketWriterTests : IAsyncLifetime
{
    private const int Size = (3 << 20) + 12345;
    private readonly TempDir _dir = new();
    private readonly byte[] _file = RandomNumberGenerator.GetBytes(Size);
    private Harness _harness = null!;

    public async Task InitializeAsync()
    {
        _dir.Write("site/big.bin", _file);
        _dir.Write("site/index.html", "<h1>home</h1>");
        _harness = await Harness.StartAsync(Harness.Vhost("a.localhost", _dir.Combine("site")));
    }

    public async Task DisposeAsync()
    {
        await _harness.DisposeAsync();
        _dir.Dispose();
    }

    [Fact]
    public async Task A_static_file_goes_by_sendfile_whole_and_in_ranges_and_the_connection_stays_usable()
    {
        using var client = _harness.CreateClient();
        var before = DirectSocketWriter.FileBytesSent;

        var whole = await client.GetByteArrayAsync(new Uri("http://a.localhost/big.bin"));
        Assert.Equal(SHA256.HashData(_file), SHA256.HashData(whole));

        using var range = new HttpRequestMessage(HttpMethod.Get, "http://a.localhost/big.bin");
        range.Headers.Range = new RangeHeaderValue(1000, 2_000_999);
        using var partial = await client.SendAsync(range);
        Assert.Equal(HttpStatusCode.PartialContent, partial.StatusCode);
        Assert.Equal(_file.AsSpan(1000, 2_000_000).ToArray(), await partial.Content.ReadAsByteArrayAsync());

        // The same keep-alive connection, then a response Kestrel writes (no placeholder left behind).
        Assert.Equal("<h1>home</h1>", await client.GetStringAsync(new Uri("http://a.localhost/index.html")));
        Assert.True(DirectSocketWriter.FileBytesSent - before >= Size + 2_000_000, "the body did not go by sendfile");

        var logged = _harness.Sink.AccessEvents.Where(e => CollectingSink.Scalar(e, "Path") == "/big.bin").Select(e => CollectingSink.Scalar(e, "Bytes")).ToList();
        Assert.Equal([Size.ToString(System.Globalization.CultureInfo.InvariantCulture), "2000000"], logged);
    }

    [Fact]
    public async Task Many_downloads_at_once_each_get_their_own_bytes()
    {
        using var client = _harness.CreateClient();
        var downloads = Enumerable.Range(0, 8).Select(_ => client.GetByteArrayAsync(new Uri("http://a.localhost/big.bin"))).ToList();
        foreach (var body in await Task.WhenAll(downloads))
        {
            Assert.Equal(SHA256.HashData(_file), SHA256.HashData(body));
        }
    }
}

/// <summary>The writer alone over a real socket pair: order and completeness when the socket takes bytes piecemeal.</summary>
public sealed class DirectSocketWriterSendTests
{
    [Fact]
    public async Task Many_buffers_flushed_at_once_arrive_whole_and_in_order_through_a_small_socket_buffer()
    {
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var client = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
        await client.ConnectAsync((IPEndPoint)listener.LocalEndpoint);
        using var server = await listener.AcceptSocketAsync();
        server.SendBufferSize = 4096;
        var connection = new Microsoft.AspNetCore.Connections.DefaultConnectionContext();
        var transportOutput = new System.IO.Pipelines.Pipe();
        using var writer = new DirectSocketWriter(server, transportOutput.Writer, connection);

        // 300 writes of 1,000 to 9,000 bytes, each its own pattern: several buffers per flush, partial sends.
        var expected = new List<byte>();
        var random = new Random(7);
        var reading = ReadAllAsync(client);
        for (var flush = 0; flush < 30; flush++)
        {
            for (var i = 0; i < 10; i++)
            {
                var chunk = new byte[random.Next(1000, 9000)];
                random.NextBytes(chunk);
                chunk.CopyTo(writer.GetSpan(chunk.Length));
                writer.Advance(chunk.Length);
                expected.AddRange(chunk);
            }

            var result = await writer.FlushAsync();
            Assert.False(result.IsCompleted);
        }

        writer.Complete();
        server.Shutdown(System.Net.Sockets.SocketShutdown.Send);
        var received = await reading.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(expected.Count, received.Length);
        Assert.True(expected.ToArray().AsSpan().SequenceEqual(received), "bytes out of order");
    }

    private static async Task<byte[]> ReadAllAsync(System.Net.Sockets.Socket socket)
    {
        var all = new MemoryStream();
        var buffer = new byte[1500];
        int n;
        while ((n = await socket.ReceiveAsync(buffer, System.Net.Sockets.SocketFlags.None)) > 0)
        {
            all.Write(buffer, 0, n);
            await Task.Yield();
        }

        return all.ToArray();
    }
}
