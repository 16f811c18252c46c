using Dispatch.Wire;

namespace Dispatch.Tests.Wire.Messages;

/// <summary>
/// DispatcherSetup and DispatcherStats (Messages/MasterDispatcher.cs): a listener protocol that is none of
/// <see cref="ListenerProtocols"/> and a counter key twice are refused at decode time.
/// </summary>
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
    public void A_dispatcher_setup_with_a_listener_protocol_it_does_not_know_is_refused()
    {
        ListenerInfo[] listeners = [new("http", "127.0.0.1:8080", []), new("tls", "127.0.0.1:8443", ["10.0.0.0/8"]), new("metrics", "127.0.0.1:9100", [])];
        Assert.Equal(["http", "tls", "metrics"], WireBytes.Decode<DispatcherSetup>(WireBytes.Of(new DispatcherSetup(listeners, [], 4))).Listeners.Select(l => l.Protocol));
        foreach (var protocol in new[] { "https", "TLS", "http ", string.Empty })
        {
            WireBytes.Refused<DispatcherSetup>(
                WireBytes.Of(new DispatcherSetup([listeners[0], listeners[1] with { Protocol = protocol }], [], 4)),
                $"DispatcherSetup listeners[1].protocol: '{protocol}' is not a listener protocol (http, tls, metrics)");
        }
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
