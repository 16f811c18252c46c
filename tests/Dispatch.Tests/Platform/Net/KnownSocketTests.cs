using System.Net;
using System.Net.Sockets;
using System.Reflection;
using Dispatch.Platform.Interop;
using Dispatch.Platform.Net;

namespace Dispatch.Tests.Platform.Net;

/// <summary>
/// A handed connection's socket made from what the dispatcher said (<see cref="KnownSocket"/>) is the socket .NET's
/// loading constructor makes by asking the kernel: every field of it and of its handle, and how it behaves.
/// </summary>
public sealed class KnownSocketTests
{
    private const int FDupFdCloExec = 1030;

    public static TheoryData<bool> Families => new() { false, true };

    [Theory]
    [MemberData(nameof(Families))]
    public void Every_field_is_what_the_loading_constructor_sets(bool ipv6)
    {
        using var pair = Connection.Open(ipv6);
        using var loaded = new Socket(pair.Duplicate());
        using var made = KnownSocket.Open(pair.Duplicate(), pair.Local, pair.Client);
        Assert.True(KnownSocket.IsFast, "this runtime's Socket lacks a member KnownSocket sets: connections are made the slow way");

        // The loading constructor leaves the local end point to its first read (a getsockname), which Kestrel makes.
        Assert.Equal(pair.Local, loaded.LocalEndPoint);
        AssertSameFields(loaded, made, skip: ["_handle"]); // each its own descriptor, compared next
        AssertSameFields(loaded.SafeHandle, made.SafeHandle, skip: ["handle"]);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public async Task The_socket_carries_the_connection_both_ways_and_closes_it(bool ipv6)
    {
        using var pair = Connection.Open(ipv6);
        var socket = KnownSocket.Open(pair.Duplicate(), pair.Local, pair.Client);
        pair.CloseAccepted(); // the made socket's descriptor is the connection's only one now

        Assert.True(socket.Connected);
        Assert.Equal(pair.Client, socket.RemoteEndPoint);
        Assert.Equal(pair.Local, socket.LocalEndPoint);
        Assert.Equal(AddressFamily.InterNetworkV6 == socket.AddressFamily, ipv6);

        await pair.Peer.SendAsync("ping"u8.ToArray());
        var buffer = new byte[16];
        Assert.Equal(4, await socket.ReceiveAsync(buffer).WaitAsync(TimeSpan.FromSeconds(20)));
        await socket.SendAsync("pong"u8.ToArray());
        Assert.Equal(4, await pair.Peer.ReceiveAsync(buffer).WaitAsync(TimeSpan.FromSeconds(20)));
        Assert.Equal("pong"u8.ToArray(), buffer[..4]);

        socket.Shutdown(SocketShutdown.Both);
        socket.Dispose();
        Assert.Equal(0, await pair.Peer.ReceiveAsync(buffer).WaitAsync(TimeSpan.FromSeconds(20)));
    }

    [Fact]
    public void A_connection_reset_before_it_is_made_has_no_peer_as_with_the_loading_constructor()
    {
        // What HandedConnectionListener drops without setting it up.
        using var pair = Connection.Open(ipv6: false);
        pair.Peer.LingerState = new LingerOption(true, 0);
        pair.Peer.Close(); // RST
        using var loaded = new Socket(pair.Duplicate());
        using var made = KnownSocket.Open(pair.Duplicate(), pair.Local, pair.Client);
        Assert.False(loaded.Connected);
        Assert.False(made.Connected);
    }

    [Fact]
    public void A_client_of_another_family_than_the_listener_takes_the_loading_constructor()
    {
        // A PROXY header's client may be IPv6 on an IPv4 connection: the socket's family is its listener's.
        using var pair = Connection.Open(ipv6: false);
        using var made = KnownSocket.Open(pair.Duplicate(), pair.Local, new IPEndPoint(IPAddress.IPv6Loopback, 1234));
        Assert.Equal(AddressFamily.InterNetwork, made.AddressFamily);
        Assert.Equal(pair.Client, made.RemoteEndPoint);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public unsafe void A_socket_accept4_gave_is_the_one_the_loading_constructor_makes_with_the_peer_accept4_said(bool ipv6)
    {
        // The dispatcher's accept loop: accept4 (non-blocking at once), the peer from its sockaddr, the listener's end point.
        var family = ipv6 ? AddressFamily.InterNetworkV6 : AddressFamily.InterNetwork;
        using var listener = new Socket(family, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(ipv6 ? IPAddress.IPv6Loopback : IPAddress.Loopback, 0));
        listener.Listen();
        using var client = new Socket(family, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        var address = stackalloc byte[128];
        uint length = 128;
        var fd = Libc.Accept4((int)listener.Handle, address, &length, Libc.SOCK_CLOEXEC | Libc.SOCK_NONBLOCK);
        Assert.True(fd >= 0, "accept4 failed");
        var peer = KnownSocket.EndPointOf(address, length);
        Assert.Equal(client.LocalEndPoint, peer);

        var duplicate = Dispatch.Wire.Interop.WireLibc.Fcntl(fd, FDupFdCloExec, 0);
        using var loaded = new Socket(new SafeSocketHandle(duplicate, ownsHandle: true));
        using var made = KnownSocket.Accepted(new SafeSocketHandle(fd, ownsHandle: true), (IPEndPoint)listener.LocalEndPoint!, peer!);
        Assert.NotNull(made);
        Assert.Equal(listener.LocalEndPoint, loaded.LocalEndPoint);
        AssertSameFields(loaded, made, skip: ["_handle"]);
        AssertSameFields(loaded.SafeHandle, made.SafeHandle, skip: ["handle", "_asyncContext"]);
        AssertToldNonBlocking(made);
    }

    [Fact]
    public unsafe void A_socket_accepted_on_a_wildcard_listener_reads_its_real_local_address()
    {
        // As .NET's accept: the listener's 0.0.0.0 is not the connection's address; it is left to getsockname.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Any, 0));
        listener.Listen();
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(new IPEndPoint(IPAddress.Loopback, port));
        var address = stackalloc byte[128];
        uint length = 128;
        var fd = Libc.Accept4((int)listener.Handle, address, &length, Libc.SOCK_CLOEXEC | Libc.SOCK_NONBLOCK);
        Assert.True(fd >= 0, "accept4 failed");
        using var made = KnownSocket.Accepted(new SafeSocketHandle(fd, ownsHandle: true), (IPEndPoint)listener.LocalEndPoint!, KnownSocket.EndPointOf(address, length)!);
        Assert.NotNull(made);
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, port), made.LocalEndPoint);
        Assert.Equal(client.LocalEndPoint, made.RemoteEndPoint);
        Assert.True(made.Connected);
    }

    [Fact]
    public unsafe void A_sockaddr_of_another_family_or_too_short_has_no_end_point()
    {
        var address = stackalloc byte[128];
        *(ushort*)address = 1; // AF_UNIX
        Assert.Null(KnownSocket.EndPointOf(address, 110));
        *(ushort*)address = 2;
        Assert.Null(KnownSocket.EndPointOf(address, 4));
        *(ushort*)address = 10;
        Assert.Null(KnownSocket.EndPointOf(address, 16));
    }

    /// <summary>
    /// The one difference from the loading constructor for an accepted socket: the socket engine is told the descriptor is
    /// non-blocking (it is, checked here), so it makes no fcntl of its own at the close. A handed socket is not told
    /// (the worker is handed blocking socketpair ends too): its handle equals the loading constructor's, field by field.
    /// </summary>
    private static void AssertToldNonBlocking(Socket made)
    {
        Assert.Equal(Libc.O_NONBLOCK, Dispatch.Wire.Interop.WireLibc.Fcntl((int)made.SafeHandle.DangerousGetHandle(), Libc.F_GETFL, 0) & Libc.O_NONBLOCK);
        var context = made.SafeHandle.GetType().GetField("_asyncContext", BindingFlags.Instance | BindingFlags.NonPublic)!.GetValue(made.SafeHandle);
        Assert.NotNull(context);
        Assert.Equal(true, context.GetType().GetField("_isHandleNonBlocking", BindingFlags.Instance | BindingFlags.NonPublic)!.GetValue(context));
    }

    private static void AssertSameFields(object expected, object actual, string[] skip)
    {
        for (var type = expected.GetType(); type is not null && type != typeof(object); type = type.BaseType)
        {
            foreach (var field in type.GetFields(BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public | BindingFlags.DeclaredOnly))
            {
                if (skip.Contains(field.Name))
                    continue;
                Assert.True(
                    Equals(field.GetValue(expected), field.GetValue(actual)),
                    $"{type.Name}.{field.Name}: {field.GetValue(expected) ?? "null"} from the loading constructor, {field.GetValue(actual) ?? "null"} made");
            }
        }
    }

    /// <summary>A loopback TCP connection: the client's end, and the accepted end as the dispatcher hands it (non-blocking).</summary>
    private sealed class Connection : IDisposable
    {
        private readonly Socket _listener;
        private Socket? _accepted;

        private Connection(bool ipv6)
        {
            var family = ipv6 ? AddressFamily.InterNetworkV6 : AddressFamily.InterNetwork;
            _listener = new Socket(family, SocketType.Stream, ProtocolType.Tcp);
            _listener.Bind(new IPEndPoint(ipv6 ? IPAddress.IPv6Loopback : IPAddress.Loopback, 0));
            _listener.Listen();
            Peer = new Socket(family, SocketType.Stream, ProtocolType.Tcp);
            Peer.Connect(_listener.LocalEndPoint!);
            _accepted = _listener.Accept();
            var fd = (int)_accepted.Handle;
            Assert.Equal(0, Dispatch.Wire.Interop.WireLibc.Fcntl(fd, Libc.F_SETFL, Dispatch.Wire.Interop.WireLibc.Fcntl(fd, Libc.F_GETFL, 0) | Libc.O_NONBLOCK));
            Local = (IPEndPoint)_listener.LocalEndPoint!;
            Client = (IPEndPoint)Peer.LocalEndPoint!;
        }

        public Socket Peer { get; }

        public IPEndPoint Local { get; }

        public IPEndPoint Client { get; }

        public static Connection Open(bool ipv6) => new(ipv6);

        /// <summary>A descriptor of the accepted end of its own, as a worker receives one.</summary>
        public SafeSocketHandle Duplicate()
        {
            var fd = Dispatch.Wire.Interop.WireLibc.Fcntl((int)_accepted!.Handle, FDupFdCloExec, 0);
            Assert.True(fd >= 0, "F_DUPFD_CLOEXEC failed");
            return new SafeSocketHandle(fd, ownsHandle: true);
        }

        public void CloseAccepted()
        {
            _accepted?.Dispose();
            _accepted = null;
        }

        public void Dispose()
        {
            CloseAccepted();
            Peer.Dispose();
            _listener.Dispose();
        }
    }
}
