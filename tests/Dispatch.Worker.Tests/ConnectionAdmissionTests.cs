using System.Net;
using System.Net.Sockets;
using System.Text;
using Dispatch.Wire.Payloads;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;
using Serilog;

namespace Dispatch.Worker.Tests;

public sealed class ConnectionAdmissionTests : IDisposable
{
    private static readonly TimeSpan Forever = TimeSpan.FromHours(1);
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    private readonly TempDir _dir = new();

    public ConnectionAdmissionTests()
    {
        _dir.Write("site/ten.txt", "0123456789");
    }

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task A_place_is_given_back_once_and_goes_to_the_next_waiter()
    {
        using var admission = new ConnectionAdmission(2, Forever);
        var first = await admission.EnterAsync(CancellationToken.None);
        var second = await admission.EnterAsync(CancellationToken.None);
        var third = admission.EnterAsync(CancellationToken.None).AsTask();
        await Task.Delay(100);
        Assert.False(third.IsCompleted);

        Assert.True(first.Release());
        Assert.False(first.Release()); // a second release gives nothing more
        await third.WaitAsync(Patience);
        Assert.Equal(2, admission.Held);

        var fourth = admission.EnterAsync(CancellationToken.None).AsTask();
        await Task.Delay(100);
        Assert.False(fourth.IsCompleted);
        second.Release();
        await fourth.WaitAsync(Patience);
        Assert.Equal(0, admission.Reclaimed);
    }

    [Fact]
    public async Task A_place_held_past_the_hold_is_taken_back()
    {
        using var admission = new ConnectionAdmission(1, TimeSpan.FromMilliseconds(50));
        var stuck = await admission.EnterAsync(CancellationToken.None);
        var next = await admission.EnterAsync(CancellationToken.None).AsTask().WaitAsync(Patience);
        Assert.True(stuck.IsReleased);
        Assert.False(stuck.Release()); // its connection's own release, later, gives nothing
        Assert.False(next.IsReleased);
        Assert.Equal(1, admission.Held);
        Assert.Equal(1, admission.Reclaimed);
    }

    [Fact]
    public async Task A_cancelled_wait_takes_no_place()
    {
        using var admission = new ConnectionAdmission(1, Forever);
        var held = await admission.EnterAsync(CancellationToken.None);
        using var cancel = new CancellationTokenSource();
        var waiting = admission.EnterAsync(cancel.Token).AsTask();
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);
        held.Release();
        await admission.EnterAsync(CancellationToken.None).AsTask().WaitAsync(Patience);
        Assert.Equal(1, admission.Held);
    }

    [Fact]
    public async Task A_client_behind_a_flood_from_one_address_is_taken_in_its_turn()
    {
        // One place, never taken back, and the test holds it while it hands 100 connections from one address over,
        // then one from another: when it lets go, the listener has them all, and the last is admitted second (by the
        // turns), not 101st.
        const int Flood = 100;
        var sink = new CollectingSink();
        using var admission = new ConnectionAdmission(1, Forever);
        await using var server = await StartAsync(sink, admission);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var clients = new List<Socket>();
        try
        {
            var handed = new List<(Socket Server, IPEndPoint Client)>();
            for (var i = 0; i <= Flood; i++)
            {
                var client = await ConnectAsync(listener);
                clients.Add(client.Client);
                var from = i < Flood ? IPAddress.Parse("192.0.2.1") : IPAddress.Parse("192.0.2.2");
                await client.Client.SendAsync(Encoding.ASCII.GetBytes($"GET /ten.txt?n={i} HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n"));
                handed.Add((client.Server, new IPEndPoint(from, 40000 + i)));
            }

            // All while the worker is busy, as a flood's hand-offs arrive.
            var busy = await admission.EnterAsync(CancellationToken.None);
            foreach (var (socket, from) in handed)
            {
                // By descriptor, as the worker's channel hands them over.
                Assert.True(server.TryEnqueue(TakeDescriptor(socket), ReadOnlyMemory<byte>.Empty, Info(from)));
            }

            busy.Release();

            foreach (var client in clients)
            {
                Assert.StartsWith("HTTP/1.1 200 ", await ReadAllAsync(client), StringComparison.Ordinal);
            }

            // The order of admission, from the listener's own lines: the access log's is the order the requests
            // finished in, and once admitted a connection runs beside the ones admitted after it.
            Assert.Equal(Flood + 1, sink.AccessEvents.Count());
            var order = sink.Events
                .Where(e => e.MessageTemplate.Text.StartsWith("Connection {ConnectionId} from {ClientAddress} admitted", StringComparison.Ordinal))
                .Select(e => CollectingSink.Scalar(e, "ClientAddress"))
                .ToList();
            Assert.Equal(Flood + 1, order.Count);
            var turn = order.IndexOf("192.0.2.2");
            Assert.True(turn == 1, $"the other address's connection was admitted {turn + 1}th of {order.Count}");
            await WaitForAsync(() => admission.Held == 0);
            Assert.Equal(0, admission.Reclaimed);
        }
        finally
        {
            foreach (var client in clients)
            {
                client.Dispose();
            }
        }
    }

    [Fact]
    public async Task A_connection_that_waits_for_its_client_gives_its_place_back()
    {
        // One place, never taken back: a connection that sends nothing (a browser's preconnect) must not keep it.
        var sink = new CollectingSink();
        using var admission = new ConnectionAdmission(1, Forever);
        await using var server = await StartAsync(sink, admission);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var idle = await ConnectAsync(listener);
        var busy = await ConnectAsync(listener);
        try
        {
            Assert.True(server.TryEnqueue(idle.Server, ReadOnlyMemory<byte>.Empty, Info(new IPEndPoint(IPAddress.Parse("192.0.2.1"), 40000))));
            await busy.Client.SendAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n"u8.ToArray());
            Assert.True(server.TryEnqueue(busy.Server, ReadOnlyMemory<byte>.Empty, Info(new IPEndPoint(IPAddress.Parse("192.0.2.2"), 40001))));
            Assert.StartsWith("HTTP/1.1 200 ", await ReadAllAsync(busy.Client).WaitAsync(Patience), StringComparison.Ordinal);
            Assert.Equal(0, admission.Held);
            Assert.Equal(0, admission.Reclaimed);

            // The idle one is still served when it speaks.
            await idle.Client.SendAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n"u8.ToArray());
            Assert.EndsWith("0123456789", await ReadAllAsync(idle.Client).WaitAsync(Patience), StringComparison.Ordinal);
        }
        finally
        {
            idle.Client.Dispose();
            busy.Client.Dispose();
        }
    }

    [Fact]
    public async Task Connections_are_counted_by_address_while_they_are_open()
    {
        var sink = new CollectingSink();
        using var admission = new ConnectionAdmission(ConnectionAdmission.DefaultLimit, Forever);
        await using var server = await StartAsync(sink, admission);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var from = IPAddress.Parse("192.0.2.7");
        var clients = new List<Socket>();
        try
        {
            for (var i = 0; i < 3; i++)
            {
                var (client, serverSide) = await ConnectAsync(listener);
                clients.Add(client);
                await client.SendAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n"u8.ToArray()); // kept alive
                Assert.True(server.TryEnqueue(serverSide, ReadOnlyMemory<byte>.Empty, Info(new IPEndPoint(from, 40000 + i))));
                Assert.EndsWith("0123456789", await ReadUntilAsync(client, "0123456789"), StringComparison.Ordinal);
            }

            Assert.Equal(3, server.Addresses.Open(from));
            Assert.Equal(3, server.Addresses.Open(IPAddress.Parse("::ffff:192.0.2.7").MapToIPv4()));
        }
        finally
        {
            foreach (var client in clients)
            {
                client.Dispose();
            }
        }

        await WaitForAsync(() => server.Addresses.Addresses == 0);
        Assert.Equal(0, server.Addresses.Open(from));
    }

    [Fact]
    public async Task A_descriptor_that_is_not_a_socket_is_dropped_and_the_next_connection_served()
    {
        var sink = new CollectingSink();
        using var admission = new ConnectionAdmission(1, Forever);
        await using var server = await StartAsync(sink, admission);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var file = File.OpenHandle(_dir.Combine("site/ten.txt"));
        var notSocket = new SafeSocketHandle(file.DangerousGetHandle(), ownsHandle: true);
        file.SetHandleAsInvalid(); // the queue owns the descriptor now
        var (client, serverSide) = await ConnectAsync(listener);
        try
        {
            Assert.True(server.TryEnqueue(notSocket, ReadOnlyMemory<byte>.Empty, Info(new IPEndPoint(IPAddress.Parse("192.0.2.1"), 40000))));
            await client.SendAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n"u8.ToArray());
            Assert.True(server.TryEnqueue(TakeDescriptor(serverSide), ReadOnlyMemory<byte>.Empty, Info(new IPEndPoint(IPAddress.Parse("192.0.2.2"), 40001))));
            Assert.EndsWith("0123456789", await ReadAllAsync(client).WaitAsync(Patience), StringComparison.Ordinal);
            Assert.True(notSocket.IsClosed);
            await WaitForAsync(() => admission.Held == 0);
        }
        finally
        {
            client.Dispose();
        }
    }

    [Fact]
    public async Task Descriptors_still_waiting_when_the_server_stops_are_closed()
    {
        // The test holds the one place, so the handed connections wait in the listener's queues when the server stops.
        var sink = new CollectingSink();
        using var admission = new ConnectionAdmission(1, Forever);
        var server = await StartAsync(sink, admission);
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var clients = new List<Socket>();
        var handles = new List<SafeSocketHandle>();
        try
        {
            var busy = await admission.EnterAsync(CancellationToken.None);
            for (var i = 0; i < 3; i++)
            {
                var (client, serverSide) = await ConnectAsync(listener);
                clients.Add(client);
                await client.SendAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n"u8.ToArray());
                var handle = TakeDescriptor(serverSide);
                handles.Add(handle);
                Assert.True(server.TryEnqueue(handle, ReadOnlyMemory<byte>.Empty, Info(new IPEndPoint(IPAddress.Parse("192.0.2.1"), 40000 + i))));
            }

            await server.DisposeAsync();
            foreach (var client in clients)
            {
                // Closed unserved, its request unread: the kernel resets it (or, had it been read, would end it).
                var ended = await Record.ExceptionAsync(async () => Assert.Equal(string.Empty, await ReadAllAsync(client)));
                Assert.True(ended is null or SocketException { SocketErrorCode: SocketError.ConnectionReset }, $"not closed: {ended}");
            }

            Assert.All(handles, h => Assert.True(h.IsClosed));
            Assert.Empty(sink.AccessEvents);
            busy.Release();
        }
        finally
        {
            foreach (var client in clients)
            {
                client.Dispose();
            }

            await server.DisposeAsync();
        }
    }

    /// <summary>
    /// The descriptor of an accepted socket (one never used asynchronously, so in no epoll set), as a handle the worker's
    /// queue owns from now on; the socket object gives it up without closing it. It is not disposed: the dispose of a
    /// socket whose handle was made invalid waits for a release that never comes.
    /// </summary>
    private static SafeSocketHandle TakeDescriptor(Socket socket)
    {
        var handle = new SafeSocketHandle(socket.SafeHandle.DangerousGetHandle(), ownsHandle: true);
        socket.SafeHandle.SetHandleAsInvalid();
        GC.SuppressFinalize(socket);
        return handle;
    }

    private static long s_nextId;

    private static HandedConnectionInfo Info(IPEndPoint from) =>
        new(Interlocked.Increment(ref s_nextId), from, null, null, null, null, HandedProtocol.Http1);

    private Task<WorkerHttpServer> StartAsync(CollectingSink sink, ConnectionAdmission admission)
    {
        var log = new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.Sink(sink).CreateLogger();
        return WorkerHttpServer.StartAsync(
            [Harness.Vhost("a.localhost", _dir.Combine("site"))], log, null, null, WorkerTimeouts.Default, CancellationToken.None, admission: admission);
    }

    private static async Task<(Socket Client, Socket Server)> ConnectAsync(TcpListener listener)
    {
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync((IPEndPoint)listener.LocalEndpoint);
        return (client, await listener.AcceptSocketAsync());
    }

    private static async Task<string> ReadAllAsync(Socket socket)
    {
        var text = new StringBuilder();
        var buffer = new byte[4096];
        int n;
        while ((n = await socket.ReceiveAsync(buffer).WaitAsync(Patience)) > 0)
        {
            text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }

        return text.ToString();
    }

    private static async Task<string> ReadUntilAsync(Socket socket, string end)
    {
        var text = new StringBuilder();
        var buffer = new byte[4096];
        while (!text.ToString().EndsWith(end, StringComparison.Ordinal))
        {
            var n = await socket.ReceiveAsync(buffer).WaitAsync(Patience);
            if (n == 0)
            {
                break;
            }

            text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }

        return text.ToString();
    }

    private static async Task WaitForAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (!condition() && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }

        Assert.True(condition());
    }
}
