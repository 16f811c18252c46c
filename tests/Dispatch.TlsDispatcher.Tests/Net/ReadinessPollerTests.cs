using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Dispatch.Platform.Interop;
using Dispatch.TlsDispatcher.Net;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Dispatch.Wire.Payloads;

namespace Dispatch.TlsDispatcher.Tests.Net;

/// <summary>
/// The dispatcher's channels to workers wait for the workers' reports in the dispatcher's own epoll set, for reading
/// only, and only while they wait. In the runtime's set a channel stays registered for reading and writing as long as it
/// is open, and each hand-off the worker read from it woke the runtime's epoll thread and a thread of the pool for
/// nothing (docs/operations.md, "A new connection's system calls").
/// </summary>
public sealed class ReadinessPollerTests
{
    [Fact]
    public async Task A_channel_that_waits_through_the_poller_is_watched_only_while_it_waits_and_only_by_the_poller()
    {
        using var poller = new ReadinessPoller();
        var (mine, theirs) = IpcChannel.RawPair(Libc.SOCK_SEQPACKET);
        using var channel = IpcChannel.FromDescriptor(mine, "worker", poller);
        using var worker = IpcChannel.FromDescriptor(theirs, "dispatcher");

        for (var round = 0; round < 3; round++)
        {
            var receive = channel.ReceiveAsync().AsTask();
            await WaitUntilAsync(() => EpollSetsWatching(mine) == 1, "the receive never waited in the poller's set");
            Assert.False(receive.IsCompleted);
            Assert.Equal(round + 1, poller.Waits);

            worker.Send(new WorkerLoad((uint)round, 7));
            using var message = await receive.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.NotNull(message);
            Assert.Equal(new WorkerLoad((uint)round, 7), message.Decode<WorkerLoad>());
            Assert.Equal(0, EpollSetsWatching(mine));
        }

        // The peer's end goes: the next receive says so.
        worker.Dispose();
        Assert.Null(await channel.ReceiveAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, EpollSetsWatching(mine));
    }

    [Fact]
    public async Task Without_the_poller_the_runtime_keeps_a_channel_in_its_epoll_set_after_the_wait()
    {
        // What the test above would see without the poller: this is why it counts epoll sets.
        var (mine, theirs) = IpcChannel.RawPair(Libc.SOCK_SEQPACKET);
        using var channel = IpcChannel.FromDescriptor(mine, "worker");
        using var worker = IpcChannel.FromDescriptor(theirs, "dispatcher");
        var receive = channel.ReceiveAsync().AsTask();
        await WaitUntilAsync(() => EpollSetsWatching(mine) > 0, "the runtime never registered the channel");
        worker.Send(new WorkerLoad(1, 1));
        using var message = await receive.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.NotNull(message);
        Assert.Equal(1, EpollSetsWatching(mine));
    }

    [Fact]
    public async Task A_channel_disposed_while_it_waits_through_the_poller_ends_its_wait_and_leaves_no_registration()
    {
        using var poller = new ReadinessPoller();
        var (mine, theirs) = IpcChannel.RawPair(Libc.SOCK_SEQPACKET);
        using var worker = IpcChannel.FromDescriptor(theirs, "dispatcher");
        var channel = IpcChannel.FromDescriptor(mine, "worker", poller);
        var receive = channel.ReceiveAsync().AsTask();
        await WaitUntilAsync(() => poller.Registered == 1, "the receive never waited in the poller's set");

        // As the dispatcher drops an idle worker while its channel waits for a report: the wait ends, and the poller has
        // forgotten the descriptor before it was closed (a number it kept would make the next socket that gets it fail
        // to register, with EPOLL_CTL_MOD on a descriptor the kernel no longer has in the set).
        await Task.Run(channel.Dispose).WaitAsync(TimeSpan.FromSeconds(30));
        await Assert.ThrowsAsync<SysCallException>(() => receive.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, poller.Registered);
        Assert.Throws<SysCallException>(() => channel.Send(new WorkerLoad(2, 2)));
    }

    [Fact]
    public async Task A_tracked_clients_wait_ends_in_its_connections_turn_and_an_untracked_descriptors_at_once()
    {
        var tokens = new ConcurrentQueue<IThreadPoolWorkItem>();
        using var poller = new ReadinessPoller { Turns = new ConnectionTurns(_ => 100, tokens.Enqueue) };
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        using var trackedClient = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        trackedClient.Connect(listener.LocalEndPoint!);
        using var tracked = listener.Accept();
        using var otherClient = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        otherClient.Connect(listener.LocalEndPoint!);
        using var other = listener.Accept();

        poller.Track((int)tracked.Handle, IPAddress.Loopback);
        var trackedWait = poller.WaitReadableAsync((int)tracked.Handle, CancellationToken.None);
        var otherWait = poller.WaitReadableAsync((int)other.Handle, CancellationToken.None);
        trackedClient.Send([1]);
        otherClient.Send([1]);

        await otherWait.WaitAsync(TimeSpan.FromSeconds(30));
        await WaitUntilAsync(() => !tokens.IsEmpty, "the tracked wait's end queued no turn");
        Assert.False(trackedWait.IsCompleted);
        Assert.True(tokens.TryDequeue(out var token));
        token.Execute();
        Assert.True(trackedWait.IsCompleted, "the wait did not end in the turn itself");
        Assert.True(tokens.IsEmpty);

        // Removed, it is forgotten: its next wait ends at once again.
        poller.Remove((int)tracked.Handle);
        tracked.Receive(new byte[1]);
        var again = poller.WaitReadableAsync((int)tracked.Handle, CancellationToken.None);
        trackedClient.Send([2]);
        await again.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(tokens.IsEmpty);
        poller.Remove((int)tracked.Handle);
        poller.Remove((int)other.Handle);
    }

    /// <summary>How many epoll sets of this process watch <paramref name="fd"/> (their <c>tfd</c> lines in /proc/self/fdinfo).</summary>
    private static int EpollSetsWatching(int fd)
    {
        var count = 0;
        foreach (var path in Directory.GetFiles("/proc/self/fd"))
        {
            string? target;
            try
            {
                target = new FileInfo(path).LinkTarget;
            }
            catch (IOException)
            {
                continue;
            }

            if (target != "anon_inode:[eventpoll]")
                continue;
            string[] lines;
            try
            {
                lines = File.ReadAllLines("/proc/self/fdinfo/" + Path.GetFileName(path));
            }
            catch (IOException)
            {
                continue;
            }

            if (lines.Any(l => l.StartsWith("tfd:", StringComparison.Ordinal) && int.Parse(l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) == fd))
                count++;
        }

        return count;
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string failure)
    {
        for (var i = 0; i < 3000 && !condition(); i++)
            await Task.Delay(10);
        Assert.True(condition(), failure);
    }
}
