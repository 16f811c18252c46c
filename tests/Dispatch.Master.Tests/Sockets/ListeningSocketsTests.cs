using System.Net;
using System.Net.Sockets;
using Dispatch.Master.Config;
using Dispatch.Master.Sockets;
using Dispatch.Master.Tests.Support;
using Dispatch.Platform.Net;
using Dispatch.Wire;

namespace Dispatch.Master.Tests.Sockets;

public sealed class ListeningSocketsTests
{
    /// <summary>
    /// A connection the kernel completes as soon as the master listens, before any dispatcher has started, already has
    /// the unsent limit and TCP_NODELAY: set only by the dispatcher, they missed the connections between the master's
    /// readiness and the dispatcher's frontends (a CI run's stalled reader was sent 4 MiB instead of 16 KiB unsent).
    /// </summary>
    [Fact]
    public void A_connection_accepted_before_any_dispatcher_has_the_unsent_limit_and_no_delay()
    {
        var sample = TwoTenants.Build();
        var config = sample with
        {
            Listen = [new ListenConfig(new IPEndPoint(IPAddress.Loopback, 0), ListenerProtocols.Http, [])],
            Dispatcher = sample.Dispatcher with { Processes = 1 },
            Operations = sample.Operations with { MetricsListen = null },
        };
        using var sockets = new ListeningSockets();
        sockets.Open(config);
        var listener = Assert.Single(sockets.For(0));
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        using var accepted = listener.Accept();

        Span<byte> value = stackalloc byte[sizeof(int)];
        Assert.Equal(sizeof(int), accepted.GetRawSocketOption(6 /* IPPROTO_TCP */, 25 /* TCP_NOTSENT_LOWAT */, value));
        Assert.Equal(ListenerOptions.UnsentLimit, BitConverter.ToInt32(value));
        Assert.True(accepted.NoDelay);
    }
}
