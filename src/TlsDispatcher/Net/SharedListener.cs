using System.Net.Sockets;
using Dispatch.Platform.Interop;

namespace Dispatch.TlsDispatcher.Net;

/// <summary>
/// Lets go of listening sockets whose open file description this process shares with the master and with the
/// dispatcher that replaces it in an upgrade: the socket must go on listening for them.
/// </summary>
/// <remarks>
/// <para>
/// .NET's <see cref="Socket.Dispose()"/> is not a plain close(2) on Linux. When the handle is still in use (an
/// accept(2) running on the socket engine's thread), it "unblocks" the socket with connect(AF_UNSPEC), which on a
/// listening TCP socket stops the listening, for every process that shares it: the next dispatcher's accepts then
/// failed with EINVAL and the site went dark until a restart (seen after an upgrade under load, once in many runs).
/// And when an asynchronous accept is still pending, the close is made abortive with SO_LINGER 0, which every socket
/// accepted later inherits.
/// </para>
/// <para>
/// So the accept loops end first (they stop on the cancellation, and nothing then runs on the socket), and, should
/// one still run: .NET skips its unblocking for a descriptor without FD_CLOEXEC ("may be shared with other
/// processes"), which is cleared just before the close (this process starts no child after setup, so nothing
/// inherits it); and it keeps the close graceful, without SO_LINGER, once the socket has been shut down for sending,
/// which shutdown(2) accepts on a listening socket and leaves listening (only a shutdown for receiving stops it).
/// </para>
/// </remarks>
internal static class SharedListener
{
    /// <summary>Closes <paramref name="listeners"/> once <paramref name="acceptLoops"/> have ended, or after <paramref name="waitMs"/> at most.</summary>
    public static async Task ReleaseAfterAsync(IReadOnlyList<Socket> listeners, Task acceptLoops, int waitMs)
    {
        await Task.WhenAny(acceptLoops, Task.Delay(waitMs)).ConfigureAwait(false);
        foreach (var listener in listeners)
            Release(listener);
    }

    /// <summary>Closes this process's descriptor for <paramref name="listener"/>; the socket stays listening for the others.</summary>
    public static void Release(Socket listener)
    {
        if (!listener.SafeHandle.IsClosed)
        {
            var fd = (int)listener.SafeHandle.DangerousGetHandle();
            var flags = Libc.Fcntl(fd, Libc.F_GETFD, 0);
            if (flags >= 0)
                Libc.Fcntl(fd, Libc.F_SETFD, flags & ~Libc.FD_CLOEXEC);
            try
            {
                listener.Shutdown(SocketShutdown.Send);
            }
            catch (SocketException)
            {
                // Not a listening TCP socket after all (nothing to keep listening): the close below is all there is.
            }
        }

        listener.Dispose();
    }
}
