using System.Net;
using System.Net.Sockets;
using Dispatch.Worker.Http;

namespace Dispatch.Worker.Tests;

public sealed class AddressFairQueueTests : IDisposable
{
    private readonly List<Socket> _sockets = [];

    public void Dispose()
    {
        foreach (var socket in _sockets)
        {
            socket.Dispose();
        }
    }

    [Fact]
    public void Addresses_take_turns_in_the_order_they_arrived()
    {
        var queue = new AddressFairQueue();
        foreach (var (address, n) in new[] { ("192.0.2.1", 1), ("192.0.2.1", 2), ("192.0.2.1", 3), ("192.0.2.2", 1), ("192.0.2.3", 1), ("192.0.2.2", 2) })
        {
            queue.Add(Pending(address, n));
        }

        Assert.Equal(6, queue.Count);
        var taken = new List<string>();
        while (queue.TryTake(out var pending))
        {
            taken.Add($"{pending.Info.Client!.Address}#{pending.Info.ConnectionId}");
        }

        Assert.Equal(["192.0.2.1#1", "192.0.2.2#1", "192.0.2.3#1", "192.0.2.1#2", "192.0.2.2#2", "192.0.2.1#3"], taken);
        Assert.Equal(0, queue.Count);
        Assert.False(queue.TryTake(out _));
    }

    [Fact]
    public void An_address_that_ran_out_joins_at_the_back_when_it_comes_again()
    {
        var queue = new AddressFairQueue();
        queue.Add(Pending("192.0.2.1", 1));
        queue.Add(Pending("192.0.2.1", 2));
        queue.Add(Pending("192.0.2.2", 1));
        Assert.True(queue.TryTake(out var first));
        Assert.True(queue.TryTake(out var second));
        Assert.Equal("192.0.2.2", second.Info.Client!.Address.ToString()); // its only one: it leaves the turns
        queue.Add(Pending("192.0.2.2", 2));
        Assert.True(queue.TryTake(out var third));
        Assert.Equal(("192.0.2.1", 2L), (third.Info.Client!.Address.ToString(), third.Info.ConnectionId));
        Assert.True(queue.TryTake(out var fourth));
        Assert.Equal(("192.0.2.2", 2L), (fourth.Info.Client!.Address.ToString(), fourth.Info.ConnectionId));
        Assert.Equal(1L, first.Info.ConnectionId);
    }

    [Fact]
    public void An_IPv4_client_seen_through_IPv6_shares_its_turn_and_no_address_is_one_more()
    {
        var queue = new AddressFairQueue();
        queue.Add(Pending("192.0.2.1", 1));
        queue.Add(Pending("::ffff:192.0.2.1", 2));
        queue.Add(Pending(null, 3));
        queue.Add(Pending(null, 4));
        queue.Add(Pending("192.0.2.9", 5));
        var ids = new List<long>();
        while (queue.TryTake(out var pending))
        {
            ids.Add(pending.Info.ConnectionId);
        }

        Assert.Equal([1L, 3, 5, 2, 4], ids);
    }

    private PendingConnection Pending(string? address, long id)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        _sockets.Add(socket);
        return new(
            socket,
            ReadOnlyMemory<byte>.Empty,
            new HandedConnectionInfo(id, address is null ? null : new IPEndPoint(IPAddress.Parse(address), 40000), null, null, null, null, HandedProtocol.Http1));
    }
}
