using System.Net;
using System.Net.Sockets;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Worker.Http;
using Xunit;

namespace Dispatch.Worker.Tests;

/// <summary>
/// What the worker makes of a hand-off message, and the socket it then makes of the descriptor: the client's TCP
/// socket from what the dispatcher said, a socketpair end (the <c>openssl</c> engine's plaintext) by asking the kernel.
/// </summary>
public sealed class HandedConnectionInfoTests
{
    private static Connection Message(ConnectionMode mode, AppProtocol protocol = AppProtocol.Http1) =>
        new(42, mode, protocol, "198.51.100.9:50123", "192.0.2.1:443", "a.localhost", "Tls13", "TLS_AES_128_GCM_SHA256", ReadOnlyMemory<byte>.Empty);

    [Fact]
    public void A_message_is_read_field_by_field()
    {
        var info = HandedConnectionInfo.From(Message(ConnectionMode.PlainHttp));

        Assert.Equal(42, info.ConnectionId);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("198.51.100.9"), 50123), info.Client);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("192.0.2.1"), 443), info.Local);
        Assert.Equal("a.localhost", info.Sni);
        Assert.Equal(HandedProtocol.Http1, info.Protocol);
        Assert.False(info.OverSocketPair);
        Assert.Null(info.Session);
        Assert.Equal(HandedProtocol.Http2, HandedConnectionInfo.From(Message(ConnectionMode.PlainHttp, AppProtocol.Http2)).Protocol);
        Assert.Equal(HandedProtocol.Tls, HandedConnectionInfo.From(Message(ConnectionMode.PassthroughTls)).Protocol);
        Assert.False(HandedConnectionInfo.From(Message(ConnectionMode.PassthroughTls)).OverSocketPair);
    }

    [Fact]
    public void Tls_the_dispatcher_ends_comes_over_a_socketpair()
    {
        var info = HandedConnectionInfo.From(Message(ConnectionMode.TerminatedTls));

        Assert.True(info.OverSocketPair);
        // The TCP connection's end points are still what the access log shows.
        Assert.Equal(new IPEndPoint(IPAddress.Parse("198.51.100.9"), 50123), info.Client);
    }

    [Fact]
    public void A_socketpair_end_is_made_a_unix_socket_not_the_tcp_connection_it_carries()
    {
        using var pair = UnixPair.Create();
        var info = HandedConnectionInfo.From(Message(ConnectionMode.TerminatedTls));

        using var socket = new PendingConnection(pair.TakeServerHandle(), null, default, info).Open();

        Assert.Equal(AddressFamily.Unix, socket.AddressFamily);
        Assert.Equal(ProtocolType.Unspecified, socket.ProtocolType);
        Assert.IsNotType<IPEndPoint>(socket.RemoteEndPoint);
        // It carries bytes both ways as such.
        Assert.Equal(3, socket.Send("abc"u8));
        var buffer = new byte[8];
        Assert.Equal(3, pair.Client.Receive(buffer));
    }

    [Fact]
    public void The_clients_tcp_socket_is_made_from_what_the_dispatcher_said()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        using var accepted = listener.Accept();
        var message = Message(ConnectionMode.PlainHttp) with
        {
            Client = client.LocalEndPoint!.ToString()!,
            Local = listener.LocalEndPoint!.ToString()!,
        };
        var fd = Libc.Fcntl((int)accepted.SafeHandle.DangerousGetHandle(), Libc.F_DUPFD_CLOEXEC, 0);
        Assert.True(fd >= 0, "F_DUPFD_CLOEXEC failed");
        var handle = new SafeSocketHandle(fd, ownsHandle: true);

        using var socket = new PendingConnection(handle, null, default, HandedConnectionInfo.From(message)).Open();

        Assert.Equal(AddressFamily.InterNetwork, socket.AddressFamily);
        Assert.Equal(ProtocolType.Tcp, socket.ProtocolType);
        Assert.Equal(client.LocalEndPoint, socket.RemoteEndPoint);
    }

    /// <summary>A connected AF_UNIX SOCK_STREAM pair, as the <c>openssl</c> engine hands its plaintext.</summary>
    private sealed class UnixPair : IDisposable
    {
        private SafeSocketHandle? _server;

        private UnixPair(SafeSocketHandle server, Socket client)
        {
            _server = server;
            Client = client;
        }

        public Socket Client { get; }

        public static unsafe UnixPair Create()
        {
            const int AF_UNIX = 1;
            const int SOCK_STREAM = 1;
            const int SOCK_CLOEXEC = 0x80000;
            var fds = stackalloc int[2];
            Assert.Equal(0, Libc.SocketPair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds));
            return new UnixPair(new SafeSocketHandle(fds[0], ownsHandle: true), new Socket(new SafeSocketHandle(fds[1], ownsHandle: true)));
        }

        public SafeSocketHandle TakeServerHandle()
        {
            var handle = _server!;
            _server = null;
            return handle;
        }

        public void Dispose()
        {
            _server?.Dispose();
            Client.Dispose();
        }
    }
}
