using System.Net;
using Dispatch.TlsDispatcher.Net;
using Dispatch.Wire.Payloads;
using Serilog;
using Serilog.Events;

namespace Dispatch.TlsDispatcher.Tests.Net;

public class ClientLimitsTests
{
    private static readonly IPAddress Flooder = IPAddress.Parse("127.0.0.2");

    [Fact]
    public void Connections_over_the_per_address_limit_are_refused_and_a_release_admits_the_next()
    {
        using var limits = new ClientLimits(() => new ClientLimitSettings(2, 0, 100, 0), new LoggerConfiguration().CreateLogger());
        Assert.Equal(ClientLimits.Refusal.None, limits.TryAdmit(Flooder));
        Assert.Equal(ClientLimits.Refusal.None, limits.TryAdmit(Flooder));
        Assert.Equal(ClientLimits.Refusal.PerAddress, limits.TryAdmit(Flooder));
        Assert.Equal(ClientLimits.Refusal.None, limits.TryAdmit(IPAddress.Loopback));
        limits.Release(Flooder);
        Assert.Equal(ClientLimits.Refusal.None, limits.TryAdmit(Flooder));
    }

    [Fact]
    public void The_connections_open_from_an_address_are_those_admitted_and_not_released()
    {
        // What ConnectionTurns orders the dispatcher's steps by; a refused connection is not open.
        using var limits = new ClientLimits(() => new ClientLimitSettings(2, 0, 100, 0), new LoggerConfiguration().CreateLogger());
        Assert.Equal(0, limits.OpenFrom(Flooder));
        limits.TryAdmit(Flooder);
        limits.TryAdmit(Flooder);
        limits.TryAdmit(Flooder);
        Assert.Equal(2, limits.OpenFrom(Flooder));
        Assert.Equal(0, limits.OpenFrom(IPAddress.Loopback));
        limits.Release(Flooder);
        Assert.Equal(1, limits.OpenFrom(Flooder));
    }

    // A burst refused within one reporting interval was logged as its first refusal only ("Refused 1"), the rest never,
    // unless another refusal came after the interval: a flood's ramp refused 247 connections from one address and the
    // log said 1 (bench/flood.sh, stalled-http from one address).
    [Fact]
    public void Every_refusal_is_counted_in_a_line_even_when_none_follows_the_interval()
    {
        var sink = new CollectingSink();
        using var limits = new ClientLimits(
            () => new ClientLimitSettings(1, 0, 100, 0),
            new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.Sink(sink).CreateLogger(),
            TimeSpan.FromMilliseconds(200));
        Assert.Equal(ClientLimits.Refusal.None, limits.TryAdmit(Flooder));
        for (var i = 0; i < 5; i++)
            Assert.Equal(ClientLimits.Refusal.PerAddress, limits.TryAdmit(Flooder));

        Assert.True(SpinWait.SpinUntil(() => sink.Count >= 2, TimeSpan.FromSeconds(20)), $"lines: {string.Join(" | ", sink.Lines())}");
        var lines = sink.Lines();
        Assert.Equal(2, lines.Count);
        Assert.StartsWith("Refused 1 connection(s)", lines[0], StringComparison.Ordinal);
        Assert.StartsWith("Refused 4 connection(s) over the client limits since the last report (4 over a per-address limit, 0 over a global one); most from \"127.0.0.2\" (4)", lines[1], StringComparison.Ordinal);
        Assert.All(sink.Events, e => Assert.Equal(LogEventLevel.Warning, e.Level));

        // Nothing refused since: no further line.
        limits.Release(Flooder);
        Assert.Equal(ClientLimits.Refusal.None, limits.TryAdmit(Flooder));
        Thread.Sleep(600);
        Assert.Equal(2, sink.Count);
    }
}
