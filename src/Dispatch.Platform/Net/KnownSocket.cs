using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Dispatch.Platform.Interop;

namespace Dispatch.Platform.Net;

/// <summary>
/// Makes the <see cref="Socket"/> of a TCP connection from what is known of it, instead of asking the kernel: in the
/// worker, from what the dispatcher said of a connection it handed over (<see cref="Open"/>); in the dispatcher, from
/// what accept4(2) said (<see cref="Accepted"/>).
/// </summary>
/// <remarks>
/// <para>
/// <see cref="Socket(SafeSocketHandle)"/> asks the kernel what the descriptor is with eight system calls (fstat,
/// SO_DOMAIN, SO_TYPE, SO_PROTOCOL, SO_ACCEPTCONN, F_GETFL, getsockname, getpeername), and Kestrel's transport makes a
/// ninth (getsockname again, for the local end point it then reads): a quarter of the worker's system calls for each
/// new connection, on a machine where every system call is dear (docs/operations.md, "A new connection's system
/// calls"). The dispatcher knows all of it: a connected TCP stream of its listener's address family, non-blocking
/// (it made it so when it accepted it). Here the socket is made with the constructor .NET's own accept uses, which
/// loads nothing, and given what the loading one would have found, with the dispatcher's end points (the ones
/// Kestrel's connection reports anyway); an accepted socket's engine is told the descriptor is non-blocking (else it makes
/// it so again, two fcntl calls, at the close). In the worker one system call stays: getpeername, whose failure (ENOTCONN)
/// says the client reset the connection before it got here (<c>HandedConnectionListenerFactory</c> drops such a
/// connection without setting it up). The dispatcher accepts on a thread of its own, with accept4(2), and makes the
/// socket as .NET's accept would have (docs/operations.md).
/// </para>
/// <para>
/// The constructor and fields are .NET's private ones, bound at compile time through <see cref="UnsafeAccessorAttribute"/>
/// (NativeAOT keeps them). A runtime that lacks one throws <see cref="MissingMemberException"/> at the first use; every
/// connection then takes the loading constructor's way, and the process says so once. <c>KnownSocketTests</c> compare
/// every field of both sockets, and of their handles, so a runtime whose loading constructor sets something more fails
/// them.
/// </para>
/// </remarks>
public static unsafe class KnownSocket
{
    private static int s_slow;

    /// <summary>Whether sockets are made without asking the kernel (false once this runtime lacked a member; see remarks).</summary>
    public static bool IsFast => Volatile.Read(ref s_slow) == 0;

    /// <summary>
    /// A handed connection's socket. <paramref name="local"/> is the dispatcher's listener (its address family is the
    /// socket's), <paramref name="client"/> the client as the dispatcher saw it; without both, or of two families (a
    /// PROXY header's client), the socket is made the loading constructor's way. Throws as that constructor does for
    /// a descriptor it cannot use.
    /// </summary>
    public static Socket Open(SafeSocketHandle handle, IPEndPoint? local, IPEndPoint? client, Serilog.ILogger? log = null)
    {
        if (local is null || client is null || local.AddressFamily != client.AddressFamily
            || local.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6)
            || !IsFast)
        {
            return new Socket(handle);
        }

        return Make(handle, local, local, client, connected: () => HasPeer(handle), knownNonBlocking: false, log) ?? new Socket(handle);
    }

    /// <summary>
    /// The socket of a connection accept4(2) just gave, non-blocking, from <paramref name="listener"/> (bound to
    /// <paramref name="bound"/>), with <paramref name="client"/> its peer; as .NET's accept makes it, the local end point
    /// is left to its first read (getsockname) when the listener's address is a wildcard. Null when this runtime's
    /// sockets lack a member (said once): the caller then makes it the loading way.
    /// </summary>
    public static Socket? Accepted(SafeSocketHandle handle, IPEndPoint bound, IPEndPoint client, Serilog.ILogger? log = null)
    {
        if (!IsFast || bound.AddressFamily != client.AddressFamily)
            return null;
        var wildcard = bound.Address.Equals(IPAddress.Any) || bound.Address.Equals(IPAddress.IPv6Any);
        return Make(handle, bound, wildcard ? null : bound, client, connected: static () => true, knownNonBlocking: true, log);
    }

    private static Socket? Make(SafeSocketHandle handle, IPEndPoint right, IPEndPoint? local, IPEndPoint client, Func<bool> connected, bool knownNonBlocking, Serilog.ILogger? log)
    {
        Socket? socket = null;
        try
        {
            // The handle is marked a socket by its own public constructor already.
            socket = Wrap(handle, loadPropertiesFromHandle: false);
            AddressFamilyOf(socket) = right.AddressFamily;
            SocketTypeOf(socket) = SocketType.Stream;
            ProtocolTypeOf(socket) = ProtocolType.Tcp;
            WillBlockInternalOf(socket) = false;
            RightEndPointOf(socket) = right;
            LocalEndPointOf(socket) = local;
            RemoteEndPointOf(socket) = client;
            IsConnectedOf(socket) = connected();

            // A descriptor accept4 just made non-blocking: its socket engine is told so, or it would make it so again (fcntl
            // F_GETFL and F_SETFL) at the close (Dispose asks for non-blocking mode once the socket is). Not for a handed
            // descriptor: the worker is also handed socketpair ends (the openssl engine's plaintext), which are blocking,
            // and an engine told otherwise blocked a thread of the pool in a receive (seen in CI).
            if (knownNonBlocking)
                IsHandleNonBlockingOf(AsyncContextOf(handle)) = true;
            return socket;
        }
        catch (MissingMemberException e)
        {
            // Half made: its finalizer must not close the handle the socket made below holds.
            if (socket is not null)
            {
#pragma warning disable CA1816 // not a Dispose: a socket dropped before it was whole
                GC.SuppressFinalize(socket);
#pragma warning restore CA1816
            }

            if (Interlocked.Exchange(ref s_slow, 1) == 0)
            {
                log?.Warning(
                    "This .NET runtime's sockets lack a member Dispatch sets directly ({Reason}): connections are made the slower way, asking the kernel what each one is",
                    e.Message);
            }

            return null;
        }
    }

    /// <summary>The IPv4 or IPv6 end point in a sockaddr of <paramref name="length"/> bytes (accept4's); null for any other family.</summary>
    public static IPEndPoint? EndPointOf(byte* address, uint length)
    {
        if (length < 2)
            return null;
        var family = *(ushort*)address;
        var port = (address[2] << 8) | address[3];
        return family switch
        {
            2 when length >= 8 => new IPEndPoint(new IPAddress(new ReadOnlySpan<byte>(address + 4, 4)), port),
            10 when length >= 28 => new IPEndPoint(new IPAddress(new ReadOnlySpan<byte>(address + 8, 16), *(uint*)(address + 24)), port),
            _ => null,
        };
    }

    // getpeername(2) succeeds while the connection has its peer: ENOTCONN once the client reset it.
    private static bool HasPeer(SafeSocketHandle handle)
    {
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            byte* address = stackalloc byte[128];
            uint length = 128;
            return Libc.GetPeerName((int)handle.DangerousGetHandle(), address, &length) == 0;
        }
        finally
        {
            if (added)
                handle.DangerousRelease();
        }
    }

    [UnsafeAccessor(UnsafeAccessorKind.Constructor)]
    private static extern Socket Wrap(SafeSocketHandle handle, bool loadPropertiesFromHandle);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_addressFamily")]
    private static extern ref AddressFamily AddressFamilyOf(Socket socket);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_socketType")]
    private static extern ref SocketType SocketTypeOf(Socket socket);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_protocolType")]
    private static extern ref ProtocolType ProtocolTypeOf(Socket socket);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_willBlockInternal")]
    private static extern ref bool WillBlockInternalOf(Socket socket);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_rightEndPoint")]
    private static extern ref EndPoint? RightEndPointOf(Socket socket);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_localEndPoint")]
    private static extern ref EndPoint? LocalEndPointOf(Socket socket);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_remoteEndPoint")]
    private static extern ref EndPoint? RemoteEndPointOf(Socket socket);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_isConnected")]
    private static extern ref bool IsConnectedOf(Socket socket);

    private const string SocketAsyncContext = "System.Net.Sockets.SocketAsyncContext, System.Net.Sockets";

    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "get_AsyncContext")]
    [return: UnsafeAccessorType(SocketAsyncContext)]
    private static extern object AsyncContextOf(SafeSocketHandle handle);

    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "_isHandleNonBlocking")]
    private static extern ref bool IsHandleNonBlockingOf([UnsafeAccessorType(SocketAsyncContext)] object context);
}
