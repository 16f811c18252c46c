using Dispatch.Wire;

namespace Dispatch.Tests.Wire.Messages;

/// <summary>
/// DispatcherSetup and DispatcherStats (Messages/MasterDispatcher.cs): a listener protocol that is none of
/// <see cref="ListenerProtocols"/>, a second metrics listener, a probe list over its bytes and a counter key twice are refused
/// at decode time.
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

    /// <summary>The dispatcher serves one metrics endpoint: a second was refused only once it was being set up, not at decode.</summary>
    [Fact]
    public void A_dispatcher_setup_with_two_metrics_listeners_is_refused()
    {
        ListenerInfo[] listeners = [new("metrics", "127.0.0.1:9100", []), new("http", "127.0.0.1:8080", []), new("metrics", "127.0.0.1:9101", [])];
        Assert.Equal(2, WireBytes.Decode<DispatcherSetup>(WireBytes.Of(new DispatcherSetup(listeners[..2], [], 4))).Listeners.Length);
        WireBytes.Refused<DispatcherSetup>(
            WireBytes.Of(new DispatcherSetup(listeners, [], 4)),
            "DispatcherSetup listeners[2].protocol: a second metrics listener (listeners[0] is one");
    }

    /// <summary>
    /// The probe list's bytes in all: at most <see cref="JailProof.MaxProbeBytes"/>, the limit the master keeps to so that
    /// the proof echoing the list fits a datagram (13 paths of 4000 bytes were accepted, and their proof could not be sent).
    /// </summary>
    [Fact]
    public void A_dispatcher_setup_with_more_probe_path_bytes_than_a_proof_holds_is_refused()
    {
        ListenerInfo[] listeners = [new("http", "127.0.0.1:8080", [])];
        var atLimit = ProbePaths(JailProof.MaxProbeBytes);
        Assert.Equal(JailProof.MaxProbeBytes, atLimit.Sum(p => System.Text.Encoding.UTF8.GetByteCount(p)));
        Assert.Equal(atLimit, WireBytes.Decode<DispatcherSetup>(WireBytes.Of(new DispatcherSetup(listeners, atLimit, 4))).ProbePaths);
        string[] over = [.. atLimit, "/é"];
        WireBytes.Refused<DispatcherSetup>(
            WireBytes.Of(new DispatcherSetup(listeners, over, 4)),
            $"DispatcherSetup probe paths: {JailProof.MaxProbeBytes + 3} bytes in all exceed the limit of {JailProof.MaxProbeBytes}");
    }

    /// <summary>Absolute paths of at most 4096 bytes that make exactly <paramref name="bytes"/> bytes together.</summary>
    internal static string[] ProbePaths(int bytes)
    {
        var paths = new List<string>();
        for (var left = bytes; left > 0; left -= paths[^1].Length)
            paths.Add("/" + new string((char)('a' + (paths.Count % 26)), Math.Min(left, JailProof.MaxProbePathBytes) - 1));
        return [.. paths];
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
