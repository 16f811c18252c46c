using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Dispatch.Platform.Interop;
using Dispatch.TlsDispatcher.Net;

namespace Dispatch.TlsDispatcher.Tests.Net;

public class SharedListenerTests
{
    private static (Socket Ours, Socket Theirs) SharedListening()
    {
        var ours = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        ours.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        ours.Listen();
        // Another descriptor for the same open file description, as the master and the next dispatcher hold.
        var dup = Libc.Fcntl((int)ours.SafeHandle.DangerousGetHandle(), Libc.F_DUPFD_CLOEXEC, 0);
        Assert.True(dup >= 0, $"fcntl(F_DUPFD_CLOEXEC): errno {Marshal.GetLastPInvokeError()}");
        return (ours, new Socket(new SafeSocketHandle(dup, ownsHandle: true)));
    }

    private static void AssertStillServes(Socket theirs)
    {
        Assert.Equal(1, (int)theirs.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.AcceptConnection)!);
        var linger = (LingerOption)theirs.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Linger)!;
        Assert.False(linger.Enabled, "SO_LINGER was set on the shared socket: every connection accepted later would inherit it");
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(theirs.LocalEndPoint!);
        using var accepted = theirs.Accept();
        Assert.Equal(client.LocalEndPoint, accepted.RemoteEndPoint);
    }

    // The failure this guards against: .NET closes a socket whose handle is in use (an accept running on the socket
    // engine's thread) with connect(AF_UNSPEC) first, which stops a listening socket listening in every process that
    // shares it. An upgrade under load left the new dispatcher's accepts failing with EINVAL. Here the handle is held
    // in use by a reference, as a running accept holds it, while the socket is released.
    [Fact]
    public async Task Released_while_in_use_the_socket_goes_on_listening_for_the_others()
    {
        var (ours, theirs) = SharedListening();
        using (theirs)
        {
            var held = false;
            ours.SafeHandle.DangerousAddRef(ref held);
            using var releasing = new ManualResetEventSlim();
            var release = Task.Run(() =>
            {
                releasing.Set();
                SharedListener.Release(ours);
            });
            releasing.Wait();
            // Dispose now waits for the reference, "unblocking" the socket meanwhile. Time for that to act, had it been
            // allowed to: it takes microseconds.
            var watch = Stopwatch.StartNew();
            while (watch.ElapsedMilliseconds < 200 && (int)theirs.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.AcceptConnection)! == 1)
                await Task.Delay(5);
            ours.SafeHandle.DangerousRelease();
            await release;
            AssertStillServes(theirs);
        }
    }

    // A pending asynchronous accept makes .NET's close abortive: SO_LINGER 0, set on the shared socket, which every
    // socket accepted from it later inherits (their closes would then reset, dropping unsent bytes).
    [Fact]
    public async Task Released_with_an_accept_pending_the_socket_goes_on_listening_and_lingers_as_before()
    {
        var (ours, theirs) = SharedListening();
        using (theirs)
        {
            var pending = ours.AcceptAsync();
            SharedListener.Release(ours);
            await Assert.ThrowsAnyAsync<Exception>(() => pending);
            AssertStillServes(theirs);
        }
    }

    [Fact]
    public async Task Released_after_its_accept_loop_has_ended()
    {
        var (ours, theirs) = SharedListening();
        using (theirs)
        {
            using var stopping = new CancellationTokenSource();
            var acceptLoop = Task.Run(async () =>
            {
                try
                {
                    using var s = await ours.AcceptAsync(stopping.Token);
                }
                catch (OperationCanceledException)
                {
                }
            });
            var released = SharedListener.ReleaseAfterAsync([ours], acceptLoop, 60_000);
            Assert.False(released.IsCompleted);
            stopping.Cancel();
            await released;
            Assert.True(ours.SafeHandle.IsClosed);
            AssertStillServes(theirs);
        }
    }
}
