using System.Net.Sockets;
using Dispatch.Platform.Interop;
using Dispatch.TlsDispatcher.Net;
using Dispatch.TlsDispatcher.Workers;
using Dispatch.Wire;
using Dispatch.Wire.Payloads;

namespace Dispatch.TlsDispatcher.Tests.Workers;

/// <summary>
/// A worker whose channel is full for a moment (busy: a flood's connections arriving faster than it takes them) gets
/// connections again as soon as it has read, not only at the next tick of the pools' 1 s timer: until it did, every
/// connection of its pool waited, the site's good clients with the flood (docs/floods.md).
/// </summary>
public sealed class WorkerPoolsTests
{
    [Fact]
    public async Task A_worker_whose_channel_was_full_gets_connections_again_as_soon_as_it_has_read()
    {
        using var master = IpcChannel.CreatePair("master", out var masterPeer);
        using var masterEnd = new Socket(new SafeSocketHandle(masterPeer, ownsHandle: true));
        using var routes = new RouteTable(
            new RouteSnapshot(1, new DispatcherSettings(10_000, 16_384, 10_000, 10_000), [], null, 443, [new PoolRoute("a", 0, false, 0, 600_000)]),
            Serilog.Core.Logger.None);

        // Without the housekeeping timer, which looked at full channels once a second before: a hand-off that waited
        // for it would wait until its WorkerWaitMs ran out, and fail.
        using var pools = new WorkerPools(master, () => routes, Serilog.Core.Logger.None, Timeout.InfiniteTimeSpan);
        var (dispatcherEnd, workerEnd) = IpcChannel.RawPair(Libc.SOCK_SEQPACKET);
        using var worker = new Socket(new SafeSocketHandle(workerEnd, ownsHandle: true)) { Blocking = false };
        pools.OnWorkerReady(new WorkerReady(0, "a", 1, Environment.ProcessId), dispatcherEnd);
        var settings = new DispatcherSettings(10_000, 16_384, WorkerWaitMs: 60_000, 10_000);

        // Hand connections over until the worker's channel is full (the worker here reads nothing yet): the next one waits.
        var clients = new List<Socket>();
        Task<bool>? waiting = null;
        try
        {
            var handed = 0;
            while (waiting is null)
            {
                Assert.True(handed < 100_000, "the worker's channel never filled");
                var (mine, theirs) = IpcChannel.RawPair(Libc.SOCK_STREAM);
                clients.Add(new Socket(new SafeSocketHandle(mine, ownsHandle: true)));
                clients.Add(new Socket(new SafeSocketHandle(theirs, ownsHandle: true)));
                var handOff = pools.HandOffAsync("a", Meta((ulong)handed), theirs, settings);
                if (handOff.IsCompleted)
                {
                    Assert.True(await handOff);
                    handed++;
                }
                else
                {
                    waiting = handOff;
                }
            }

            Assert.True(handed > 10, $"only {handed} hand-offs fit in the channel");

            // The worker reads its channel (all of it), as a busy worker does a moment later. The waiting connection goes
            // to it now (nothing else would look at the channel again): possibly while it reads, so count it after.
            var buffer = new byte[65536];
            int Drain()
            {
                var n = 0;
                while (true)
                {
                    try
                    {
                        worker.Receive(buffer);
                        n++;
                    }
                    catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
                    {
                        return n;
                    }
                }
            }

            var read = Drain();
            Assert.True(await waiting, "the connection waited for the timer, and gave up");
            read += Drain();
            Assert.Equal(handed + 1, read);

            // And the next ones go without waiting at all.
            for (var i = 0; i < 10; i++)
            {
                var (mine, theirs) = IpcChannel.RawPair(Libc.SOCK_STREAM);
                clients.Add(new Socket(new SafeSocketHandle(mine, ownsHandle: true)));
                clients.Add(new Socket(new SafeSocketHandle(theirs, ownsHandle: true)));
                var next = pools.HandOffAsync("a", Meta((ulong)(handed + 1 + i)), theirs, settings);
                Assert.True(next.IsCompleted, "a hand-off waited although the channel has room");
                Assert.True(await next);
            }
        }
        finally
        {
            foreach (var c in clients)
                c.Dispose();
        }
    }

    /// <summary>
    /// The metrics per vhost: a worker's reports are believed for the vhosts of its own pool only (a report of another
    /// pool's vhost is not counted, and said once); the workers of a pool add up; a worker let go still reports over
    /// its half-closed channel until it exits, and what it reported last stays counted after.
    /// </summary>
    [Fact]
    public async Task A_workers_traffic_counts_for_its_own_pools_vhosts_and_stays_counted_after_it_is_let_go_and_exits()
    {
        using var master = IpcChannel.CreatePair("master", out var masterPeer);
        using var masterEnd = new Socket(new SafeSocketHandle(masterPeer, ownsHandle: true));
        using var routes = new RouteTable(
            new RouteSnapshot(
                1,
                new DispatcherSettings(10_000, 16_384, 10_000, 10_000),
                [
                    new VhostRoute("a.localhost", ["www.a.localhost"], "a", TlsModes.Passthrough, [], HttpModes.Serve, false, TlsEngines.BouncyCastle),
                    new VhostRoute("b.localhost", [], "b", TlsModes.Passthrough, [], HttpModes.Serve, false, TlsEngines.BouncyCastle),
                ],
                null,
                443,
                [new PoolRoute("a", 0, false, 0, 600_000), new PoolRoute("b", 0, false, 0, 600_000)]),
            Serilog.Core.Logger.None);
        var sink = new CollectingSink();
        using var pools = new WorkerPools(master, () => routes, new Serilog.LoggerConfiguration().WriteTo.Sink(sink).CreateLogger(), Timeout.InfiniteTimeSpan);
        IpcChannel Join(int id)
        {
            var (dispatcherEnd, workerEnd) = IpcChannel.RawPair(Libc.SOCK_SEQPACKET);
            pools.OnWorkerReady(new WorkerReady(0, "a", id, Environment.ProcessId), dispatcherEnd);
            return IpcChannel.FromDescriptor(workerEnd, "dispatcher");
        }

        static VhostTraffic Served(string vhost, long ok, long bytes) => new(vhost, [0, ok, 0, 0, 0], bytes, ok * 1000, [ok, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        VhostTraffic? Counted(string vhost) => pools.Traffic().SingleOrDefault(t => t.Vhost == vhost);
        bool Shows(long ok, long bytes) => SpinWait.SpinUntil(() => Counted("a.localhost") is { } t && t.Requests[1] == ok && t.BytesSent == bytes, TimeSpan.FromSeconds(30));

        using var first = Join(1);
        using var second = Join(2);
        first.Send(new WorkerTraffic([Served("a.localhost", 3, 300), Served("b.localhost", 50, 5000)]));
        second.Send(new WorkerTraffic([Served("a.localhost", 2, 20)]));
        Assert.True(Shows(5, 320), $"a.localhost: {Counted("a.localhost")?.Total}");
        Assert.Null(Counted("b.localhost"));
        first.Send(new WorkerTraffic([Served("b.localhost", 60, 6000)]));
        second.Send(new WorkerTraffic([Served("a.localhost", 4, 40)]));
        Assert.True(Shows(7, 340));
        Assert.Null(Counted("b.localhost"));
        Assert.Single(sink.Lines(), l => l.Contains("reported traffic of \"b.localhost\", which is not a vhost of its pool now: not counted", StringComparison.Ordinal));

        // Let go (as a one-shot worker is once its connection is handed over): it finds the end of its channel...
        pools.OnGone(new WorkerGone(1, "a", "one-shot"));
        Assert.Null(await first.ReceiveAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Single(pools.Describe());

        // ...and its last requests, served after that, still count; so does all it reported once it has exited.
        first.Send(new WorkerTraffic([Served("a.localhost", 10, 1000)]));
        Assert.True(Shows(14, 1040));
        first.Dispose();
        second.Send(new WorkerTraffic([Served("a.localhost", 5, 50)]));
        Assert.True(Shows(15, 1050));

        // What the dispatcher answered itself for a vhost joins its workers' counts (b.localhost: no worker reported
        // it); a vhost no longer routed is left out.
        var answered = new VhostAnswers();
        answered.Record("a.localhost", 301, 0, Environment.TickCount64);
        answered.Record("b.localhost", 503, 67, Environment.TickCount64);
        answered.Record("gone.localhost", 503, 67, Environment.TickCount64);
        var withAnswers = pools.Traffic(answered);
        var a = Assert.Single(withAnswers, t => t.Vhost == "a.localhost");
        Assert.Equal([0, 15, 1, 0, 0], a.Requests);
        Assert.Equal(1050, a.BytesSent);
        Assert.Equal(16, a.Buckets.Sum());
        var b = Assert.Single(withAnswers, t => t.Vhost == "b.localhost");
        Assert.Equal([0, 0, 0, 0, 1], b.Requests);
        Assert.Equal(67, b.BytesSent);
        Assert.DoesNotContain(withAnswers, t => t.Vhost == "gone.localhost");
    }

    /// <summary>
    /// A reload that moves a vhost to another pool: the old pool's workers finish what they have, and what they report
    /// for it after the reload still counts, since it was theirs when they served it (a vhost they never reported stays
    /// another pool's).
    /// </summary>
    [Fact]
    public void A_vhost_moved_to_another_pool_keeps_counting_the_old_pools_last_requests()
    {
        using var master = IpcChannel.CreatePair("master", out var masterPeer);
        using var masterEnd = new Socket(new SafeSocketHandle(masterPeer, ownsHandle: true));
        static RouteTable Routes(long generation, string poolOfA) => new(
            new RouteSnapshot(
                generation,
                new DispatcherSettings(10_000, 16_384, 10_000, 10_000),
                [
                    new VhostRoute("a.localhost", [], poolOfA, TlsModes.Passthrough, [], HttpModes.Serve, false, TlsEngines.BouncyCastle),
                    new VhostRoute("b.localhost", [], "b", TlsModes.Passthrough, [], HttpModes.Serve, false, TlsEngines.BouncyCastle),
                ],
                null,
                443,
                [new PoolRoute("a", 0, false, 0, 600_000), new PoolRoute("b", 0, false, 0, 600_000)]),
            Serilog.Core.Logger.None);
        using var before = Routes(1, "a");
        using var after = Routes(2, "b");
        var current = before;
        var sink = new CollectingSink();
        using var pools = new WorkerPools(master, () => current, new Serilog.LoggerConfiguration().WriteTo.Sink(sink).CreateLogger(), Timeout.InfiniteTimeSpan);
        var (dispatcherEnd, workerEnd) = IpcChannel.RawPair(Libc.SOCK_SEQPACKET);
        pools.OnWorkerReady(new WorkerReady(0, "a", 1, Environment.ProcessId), dispatcherEnd);
        using var worker = IpcChannel.FromDescriptor(workerEnd, "dispatcher");
        static VhostTraffic Served(string vhost, long ok) => new(vhost, [0, ok, 0, 0, 0], ok, ok, [ok, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        long Counted(string vhost) => pools.Traffic().SingleOrDefault(t => t.Vhost == vhost)?.Requests[1] ?? 0;

        worker.Send(new WorkerTraffic([Served("a.localhost", 3)]));
        Assert.True(SpinWait.SpinUntil(() => Counted("a.localhost") == 3, TimeSpan.FromSeconds(30)), $"a.localhost: {Counted("a.localhost")}");

        current = after;
        worker.Send(new WorkerTraffic([Served("a.localhost", 5), Served("b.localhost", 100)]));
        Assert.True(SpinWait.SpinUntil(() => Counted("a.localhost") == 5, TimeSpan.FromSeconds(30)), $"a.localhost: {Counted("a.localhost")}");
        Assert.True(SpinWait.SpinUntil(() => sink.Lines().Any(l => l.Contains("reported traffic of \"b.localhost\"", StringComparison.Ordinal)), TimeSpan.FromSeconds(30)));
        Assert.Equal(0, Counted("b.localhost"));
    }

    /// <summary>An identity vhost is served by one pool per login: a worker of a login's pool counts for it, another pool's does not.</summary>
    [Fact]
    public void An_identity_vhosts_traffic_counts_from_the_workers_of_its_logins_pools()
    {
        using var master = IpcChannel.CreatePair("master", out var masterPeer);
        using var masterEnd = new Socket(new SafeSocketHandle(masterPeer, ownsHandle: true));
        using var routes = new RouteTable(
            new RouteSnapshot(
                1,
                new DispatcherSettings(10_000, 16_384, 10_000, 10_000),
                [
                    new VhostRoute("id.localhost", [], string.Empty, TlsModes.Terminate, [], HttpModes.Redirect, false, TlsEngines.BouncyCastle, new VhostIdentity("r", [new IdentityUser("alice", "h", "u-alice"), new IdentityUser("bob", "h", "u-bob")], 5, 5, 60_000)),
                    new VhostRoute("b.localhost", [], "b", TlsModes.Passthrough, [], HttpModes.Serve, false, TlsEngines.BouncyCastle),
                ],
                null,
                443,
                [new PoolRoute("u-alice", 0, false, 0, 600_000), new PoolRoute("u-bob", 0, false, 0, 600_000), new PoolRoute("b", 0, false, 0, 600_000)]),
            Serilog.Core.Logger.None);
        var sink = new CollectingSink();
        using var pools = new WorkerPools(master, () => routes, new Serilog.LoggerConfiguration().WriteTo.Sink(sink).CreateLogger(), Timeout.InfiniteTimeSpan);
        IpcChannel Join(string pool, int id)
        {
            var (dispatcherEnd, workerEnd) = IpcChannel.RawPair(Libc.SOCK_SEQPACKET);
            pools.OnWorkerReady(new WorkerReady(0, pool, id, Environment.ProcessId), dispatcherEnd);
            return IpcChannel.FromDescriptor(workerEnd, "dispatcher");
        }

        static VhostTraffic Served(long ok) => new("id.localhost", [0, ok, 0, 0, 0], ok, ok, [ok, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        using var alice = Join("u-alice", 1);
        using var bob = Join("u-bob", 2);
        using var other = Join("b", 3);
        other.Send(new WorkerTraffic([Served(1000)]));
        Assert.True(SpinWait.SpinUntil(() => sink.Lines().Any(l => l.Contains("reported traffic of \"id.localhost\"", StringComparison.Ordinal)), TimeSpan.FromSeconds(30)), "pool b's report was not refused");
        alice.Send(new WorkerTraffic([Served(2)]));
        bob.Send(new WorkerTraffic([Served(3)]));
        Assert.True(
            SpinWait.SpinUntil(() => pools.Traffic().SingleOrDefault(t => t.Vhost == "id.localhost") is { } t && t.Requests[1] == 5, TimeSpan.FromSeconds(30)),
            $"id.localhost: {pools.Traffic().SingleOrDefault()?.Requests[1]}");
    }

    private static Connection Meta(ulong id) => new(id, ConnectionMode.PlainHttp, AppProtocol.Http1, "127.0.0.1:1", "127.0.0.1:80", null, null, null, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"u8.ToArray());
}
