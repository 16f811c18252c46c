using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Dispatch.Platform.Confinement;
using Dispatch.Platform.Interop;
using Dispatch.Worker.Tests.Support;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests;

/// <summary>
/// What a worker's Landlock domain (<see cref="Landlock.RestrictSelf"/>, as the jail applies it) lets the proxy reach,
/// checked on a dedicated thread (Landlock binds only the calling thread, which then ends).
/// </summary>
public sealed class ProxyLandlockTests(ITestOutputHelper output)
{
    [Fact]
    public void A_landlocked_thread_connects_to_a_unix_socket_without_a_rule_but_to_no_tcp_port()
    {
        var abi = Landlock.AbiVersion();
        output.WriteLine($"Landlock ABI {abi}, kernel {Environment.OSVersion.VersionString}");
        Assert.True(abi >= 1, "Landlock is not available on this kernel");

        using var dir = new TempDir();
        var socketPath = dir.Combine("app.sock");
        using var unixListener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        unixListener.Bind(new UnixDomainSocketEndPoint(socketPath));
        unixListener.Listen(4);
        using var tcpListener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        tcpListener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        tcpListener.Listen(4);
        var tcpEndPoint = (IPEndPoint)tcpListener.LocalEndPoint!;

        string? before = null, passwd = null, unix = null, tcp = null;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                // Warm up first: loading an assembly later would need read access the domain does not give.
                before = Connect(new UnixDomainSocketEndPoint(socketPath)) + "/" + Connect(tcpEndPoint) + "/" + Open("/etc/passwd");
                if (Libc.Prctl(Libc.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
                {
                    throw new InvalidOperationException("prctl(PR_SET_NO_NEW_PRIVS) failed");
                }

                // Read the runtime and the test binaries only; no rule at all for the socket's directory.
                Landlock.RestrictSelf([RuntimeEnvironment.GetRuntimeDirectory(), AppContext.BaseDirectory], [], []);
                passwd = Open("/etc/passwd");
                unix = Connect(new UnixDomainSocketEndPoint(socketPath));
                tcp = Connect(tcpEndPoint);
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        thread.Start();
        thread.Join();
        output.WriteLine($"before: {before}; after: passwd {passwd}, unix {unix}, tcp {tcp}");
        Assert.Null(failure);
        Assert.Equal("connected/connected/opened", before);
        Assert.Equal("denied", passwd); // the domain holds

        // Connecting to a pathname Unix socket is not a Landlock filesystem access up to ABI 8 (LANDLOCK_ACCESS_FS_MAKE_SOCK
        // is about creating one); only the socket's permissions (write) and its directories' (search) count. A kernel
        // with LANDLOCK_ACCESS_FS_RESOLVE_UNIX changes this only once RestrictSelf handles that right.
        Assert.Equal("connected", unix);

        // TCP connect is handled (ABI 4+) with no port rule: denied, loopback included.
        Assert.Equal(abi >= 4 ? "AccessDenied" : "connected", tcp);
    }

    [Fact]
    public void A_connect_port_rule_opens_that_tcp_port_only()
    {
        if (Landlock.AbiVersion() < 4)
        {
            output.WriteLine("SKIPPED LOUDLY: Landlock ABI < 4 has no network rules");
            Assert.Fail("Landlock ABI 4 or later is required for this test");
        }

        using var allowed = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        allowed.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        allowed.Listen(4);
        using var other = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        other.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        other.Listen(4);
        var allowedEndPoint = (IPEndPoint)allowed.LocalEndPoint!;
        var otherEndPoint = (IPEndPoint)other.LocalEndPoint!;

        string? toAllowed = null, toOther = null;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                _ = Connect(allowedEndPoint) + Connect(otherEndPoint);
                if (Libc.Prctl(Libc.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
                {
                    throw new InvalidOperationException("prctl(PR_SET_NO_NEW_PRIVS) failed");
                }

                Landlock.RestrictSelf([RuntimeEnvironment.GetRuntimeDirectory(), AppContext.BaseDirectory], [], [], [(ushort)allowedEndPoint.Port]);
                toAllowed = Connect(allowedEndPoint);
                toOther = Connect(otherEndPoint);
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        thread.Start();
        thread.Join();
        output.WriteLine($"port {allowedEndPoint.Port} (ruled): {toAllowed}; port {otherEndPoint.Port}: {toOther}");
        Assert.Null(failure);
        Assert.Equal("connected", toAllowed);
        Assert.Equal("AccessDenied", toOther);
    }

    private static string Connect(EndPoint endPoint)
    {
        using var socket = endPoint is UnixDomainSocketEndPoint
            ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
            : new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Connect(endPoint); // synchronous: connect(2) runs on this (landlocked) thread
            return "connected";
        }
        catch (SocketException e)
        {
            return e.SocketErrorCode.ToString();
        }
    }

    private static string Open(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            return "opened";
        }
        catch (UnauthorizedAccessException)
        {
            return "denied";
        }
    }
}
