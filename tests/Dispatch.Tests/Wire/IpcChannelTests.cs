using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Wire.Interop;

namespace Dispatch.Tests.Wire;

public class IpcChannelTests
{
    [Fact]
    public async Task A_message_and_its_descriptor_arrive_intact()
    {
        using var a = IpcChannel.CreatePair("b", out var bFd);
        using var b = IpcChannel.FromDescriptor(bFd, "a");
        var (x, y) = IpcChannel.RawPair(Libc.SOCK_STREAM);
        try
        {
            var receive = b.ReceiveAsync().AsTask();
            a.Send(new WorkerReady(7, "pool-a", 42, 4242), [x]);
            using var message = await receive.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.NotNull(message);
            var ready = message.Decode<WorkerReady>();
            Assert.Equal(new WorkerReady(7, "pool-a", 42, 4242), ready);
            Assert.Equal(1, message.Descriptors.Count);
            var fd = message.Descriptors.Take(0);
            Assert.Equal(Libc.FD_CLOEXEC, Libc.Fcntl(fd, Libc.F_GETFD, 0) & Libc.FD_CLOEXEC);
            Libc.Close(fd);
        }
        finally
        {
            Libc.Close(x);
            Libc.Close(y);
        }
    }

    [Fact]
    public async Task A_peer_closing_with_our_messages_unread_reads_as_null_not_as_a_reset()
    {
        // Linux resets (ECONNRESET) the survivor of a pair whose peer closed with data still unread: a draining
        // dispatcher that exits while its workers' load reports wait in its queue. That is an end, as EOF is;
        // it crashed the workers (an unhandled SocketException, SIGABRT) in the upgrade test under load.
        using (var a = IpcChannel.CreatePair("b", out var bFd))
        {
            var receive = a.ReceiveAsync().AsTask(); // waiting when the reset comes
            a.Send(new WorkerLoad(1, 1));
            Libc.Close(bFd);
            Assert.Null(await receive.WaitAsync(TimeSpan.FromSeconds(10)));
        }

        using (var a = IpcChannel.CreatePair("b", out var bFd))
        {
            a.Send(new WorkerLoad(1, 1));
            Libc.Close(bFd);
            Assert.Null(await a.ReceiveAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10))); // reset already there
        }
    }

    [Fact]
    public void A_disposed_channel_sends_nowhere_not_even_to_the_descriptor_that_took_its_number()
    {
        // The master disposed a drained dispatcher's channel while a worker start for it was still under way; the
        // socketpair made next for that worker took the freed number, and the WorkerReady meant for the dispatcher went
        // to the worker itself (seen in StopAndUpgradeTests). A disposed channel must fail as a closed descriptor does.
        var a = IpcChannel.CreatePair("b", out var bFd);
        a.Dispose();
        Libc.Close(bFd);
        // The lowest free numbers: x is the one freed unless a test running beside this one took it first.
        var (x, y) = IpcChannel.RawPair(Libc.SOCK_SEQPACKET);
        using var other = IpcChannel.FromDescriptor(y, "x");
        try
        {
            var e = Assert.Throws<SysCallException>(() => a.Send(new WorkerLoad(1, 1)));
            Assert.Equal(9, e.Errno); // EBADF
            Assert.False(a.Writable);
            Assert.Throws<WireException>(() => other.ReceiveBlocking(200)); // nothing arrived through the reused number
        }
        finally
        {
            Libc.Close(x);
        }
    }

    [Fact]
    public unsafe void A_wait_on_a_disposed_channel_throws_instead_of_polling_the_descriptor_that_took_its_number()
    {
        // The worker's receive loop polled the dispatcher channel's raw number while Main could dispose the channel: the
        // number, reused, would have been polled (and reported readable) in its place. PollReadable holds the descriptor.
        var a = IpcChannel.CreatePair("b", out var bFd);
        var number = a.Descriptor;
        a.Dispose();
        Libc.Close(bFd);
        var (x, y) = IpcChannel.RawPair(Libc.SOCK_SEQPACKET);
        try
        {
            // Something readable on x, which most likely took the freed number (unless a test beside this one took it).
            using (var sender = new System.Net.Sockets.Socket(new System.Net.Sockets.SafeSocketHandle(y, ownsHandle: false)))
            {
                Assert.Equal(1, sender.Send([1]));
            }

            if (x == number)
            {
                // The hazard itself: a raw poll of the old number reports the new socket readable.
                var pfd = new WireLibc.PollFd { Fd = number, Events = WireLibc.POLLIN };
                Assert.Equal(1, WireLibc.Poll(&pfd, 1, 0));
            }

            var e = Assert.Throws<SysCallException>(() => a.PollReadable(0));
            Assert.Equal(9, e.Errno); // EBADF, as a receive on the disposed channel
        }
        finally
        {
            Libc.Close(x);
            Libc.Close(y);
        }
    }

    [Fact]
    public async Task Disposing_a_channel_wakes_a_wait_in_PollReadable_and_a_later_wait_throws()
    {
        // A raw poll(2) is not woken when another thread closes its descriptor (Linux): the worker's receive thread sat out
        // its whole wait on a number that was no longer the channel's. Held, the descriptor is shut down by the runtime's
        // Dispose first, which ends the wait; then closed.
        var a = IpcChannel.CreatePair("b", out var bFd);
        try
        {
            using var waiting = new ManualResetEventSlim();
            var wait = Task.Factory.StartNew(
                () =>
                {
                    waiting.Set();
                    return a.PollReadable(120_000);
                },
                TaskCreationOptions.LongRunning);
            waiting.Wait(TimeSpan.FromSeconds(10));
            Thread.Sleep(100); // into poll(2), most likely; the assertions hold either way
            a.Dispose();
            try
            {
                Assert.Equal(1, await wait.WaitAsync(TimeSpan.FromSeconds(30))); // woken (hung up), well before its 120 s
            }
            catch (SysCallException e) when (e.Errno == 9)
            {
                // Disposed before the wait began: refused, as below.
            }

            Assert.Equal(9, Assert.Throws<SysCallException>(() => a.PollReadable(0)).Errno);
        }
        finally
        {
            Libc.Close(bFd);
        }
    }

    [Fact]
    public async Task Peer_closing_reads_as_null()
    {
        using var a = IpcChannel.CreatePair("b", out var bFd);
        Libc.Close(bFd);
        Assert.Null(await a.ReceiveAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
    }
}
