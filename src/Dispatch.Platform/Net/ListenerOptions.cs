using System.Net.Sockets;

namespace Dispatch.Platform.Net;

/// <summary>
/// What every client connection needs, set once on its listening socket: Linux copies a listener's TCP options into
/// each connection it accepts, so they are not set twice per connection (in the dispatcher and in the worker, which
/// each system call of a new connection costs: docs/operations.md, "A new connection's system calls"); they are in the
/// socket, so they hold for the worker it is handed to. The master sets them before <c>listen</c> (a connection the
/// kernel completes from then on, before any dispatcher runs, already has them: set only by the dispatcher, they
/// missed the connections that came between the master's readiness and the dispatcher's start); the dispatcher sets
/// them again on the listeners it is given (the same values: nothing changes).
/// </summary>
public static class ListenerOptions
{
    /// <summary>
    /// The most bytes a connection's socket holds that the client's window has not let through yet
    /// (<c>TCP_NOTSENT_LOWAT</c>): a write blocks beyond that. Without it the kernel takes 0.8 to 3 MB of a response
    /// into the send buffer of a client that does not read (its autotuned size), all of it copied through the worker
    /// first: a flood of stalled readers cost that per connection (docs/floods.md). What is in flight is not limited,
    /// so a client that reads keeps its throughput; the writer is woken once the backlog falls below this.
    /// 16 KiB (one TLS record): 256 KiB still made each of a flood's stalled readers cost the worker 256 KiB of copying as
    /// it arrived, and its good client's p99 twice what it is with 16 KiB; downloads lost nothing measurable
    /// (bench/datapath.sh's dl-http and dl-tls13 rows; docs/floods.md, "The unsent limit").
    /// </summary>
    public const int UnsentLimit = 16 * 1024;

    /// <summary>
    /// Sets <see cref="UnsentLimit"/> (<c>TCP_NOTSENT_LOWAT</c>) and <c>TCP_NODELAY</c> (a response's last segment is not
    /// held back for an ACK) on a TCP <paramref name="listener"/>; a listener of another family is left as it is.
    /// </summary>
    public static void Apply(Socket listener)
    {
        if (listener.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6))
            return;

        Span<byte> value = stackalloc byte[sizeof(int)];
        BitConverter.TryWriteBytes(value, UnsentLimit);
        listener.SetRawSocketOption(6 /* IPPROTO_TCP */, 25 /* TCP_NOTSENT_LOWAT */, value);
        listener.NoDelay = true;
    }
}
