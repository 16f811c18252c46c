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
    public void An_address_with_few_connections_open_goes_before_a_flooding_one_and_the_flood_still_moves()
    {
        var open = new Dictionary<string, int> { ["192.0.2.1"] = 500 };
        var queue = new AddressFairQueue(address => open.GetValueOrDefault(address.ToString()));
        for (var i = 1; i <= 10; i++)
        {
            queue.Add(Pending("192.0.2.1", i)); // the flood: 500 open already
        }

        for (var i = 1; i <= 6; i++)
        {
            queue.Add(Pending($"192.0.2.{10 + i}", 100 + i)); // six visitors, none open
        }

        var ids = new List<long>();
        while (queue.TryTake(out var pending))
        {
            ids.Add(pending.Info.ConnectionId);
        }

        // Four visitors' turns, then one of the flood's, and so on; the flood's rest when no visitor waits.
        Assert.Equal([101L, 102, 103, 104, 1, 105, 106, 2, 3, 4, 5, 6, 7, 8, 9, 10], ids);
    }

    [Fact]
    public void An_address_turns_heavy_as_its_connections_open()
    {
        var open = new Dictionary<string, int>();
        var queue = new AddressFairQueue(address => open.GetValueOrDefault(address.ToString()));
        for (var i = 1; i <= 3; i++)
        {
            queue.Add(Pending("192.0.2.1", i));
        }

        Assert.True(queue.TryTake(out _)); // 1; its next turn is queued light (open: 0)
        open["192.0.2.1"] = AddressFairQueue.LightBelow;
        queue.Add(Pending("192.0.2.2", 100));
        Assert.True(queue.TryTake(out var second));
        Assert.Equal(2L, second.Info.ConnectionId); // its turn was queued light, before the visitor came
        Assert.True(queue.TryTake(out var third));
        Assert.Equal(100L, third.Info.ConnectionId); // its next turn was queued heavy
        Assert.True(queue.TryTake(out var fourth));
        Assert.Equal(3L, fourth.Info.ConnectionId);
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
            null,
            socket,
            ReadOnlyMemory<byte>.Empty,
            new HandedConnectionInfo(id, address is null ? null : new IPEndPoint(IPAddress.Parse(address), 40000), null, null, null, null, HandedProtocol.Http1));
    }
}
