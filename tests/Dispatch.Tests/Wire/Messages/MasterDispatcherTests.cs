using Dispatch.Wire;

namespace Dispatch.Tests.Wire.Messages;

/// <summary>DispatcherStats (Messages/MasterDispatcher.cs): a counter key twice is refused at decode time.</summary>
public class MasterDispatcherTests
{
    [Fact]
    public void Dispatcher_stats_with_a_counter_key_twice_are_refused()
    {
        var counters = new StatCounter[] { new("dispatch_connections_total", 5), new("dispatch_open_connections", 1) };
        Assert.Equal(counters, WireBytes.Decode<DispatcherStats>(WireBytes.Of(new DispatcherStats(7, counters, []))).Counters);
        WireBytes.Refused<DispatcherStats>(
            WireBytes.Of(new DispatcherStats(7, [.. counters, new("dispatch_connections_total", 1_000_000)], [])),
            "DispatcherStats counters[2]: the key 'dispatch_connections_total' appears twice");
    }

    [Fact]
    public async Task The_masters_end_refuses_it_as_a_protocol_break_before_its_handler_runs()
    {
        // The master's table for a dispatcher (DispatcherPeer ends the dispatcher on this WireException, as on any).
        var handled = 0;
        var table = new PeerTable(Peers.MasterFromDispatcher)
            .On<NeedWorker>((_, _) => handled++)
            .On<WorkerGone>((_, _) => handled++)
            .On<DispatcherStats>((_, _) => handled++)
            .On<MetricsRequest>((_, _) => handled++)
            .Complete();
        using var master = IpcChannel.CreatePair("dispatcher", out var dispatcherFd);
        using var dispatcher = IpcChannel.FromDescriptor(dispatcherFd, "master");
        dispatcher.Send(new DispatcherStats(7, [new("dispatch_connections_total", 5), new("dispatch_connections_total", 6)], []));
        using var message = await master.ReceiveAsync();
        Assert.NotNull(message);
        var e = await Assert.ThrowsAsync<WireException>(async () => await table.DispatchAsync(message, PeerPhase.Serving));
        Assert.Contains("appears twice", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, handled);
    }
}
