using System.Net;

namespace Dispatch.Worker.Http;

/// <summary>
/// Handed connections waiting for Kestrel (<see cref="ConnectionAdmission"/>), one queue per client address, taken from
/// the addresses in turn: one from each address that has any, in the order the addresses arrived. A flood from one
/// address (or a hundred) then delays another client by one connection per flooding address, not by the flood.
/// Not thread-safe: its listener locks.
/// </summary>
internal sealed class AddressFairQueue
{
    private readonly Dictionary<IPAddress, Queue<PendingConnection>> _byAddress = [];
    private readonly Queue<IPAddress> _turns = new();

    public int Count { get; private set; }

    public void Add(PendingConnection pending)
    {
        var address = Key(pending.Info.Client);
        if (!_byAddress.TryGetValue(address, out var queue))
        {
            queue = new Queue<PendingConnection>();
            _byAddress[address] = queue;
            _turns.Enqueue(address);
        }

        queue.Enqueue(pending);
        Count++;
    }

    public bool TryTake(out PendingConnection pending)
    {
        if (!_turns.TryDequeue(out var address))
        {
            pending = default;
            return false;
        }

        var queue = _byAddress[address];
        pending = queue.Dequeue();
        Count--;
        if (queue.Count > 0)
        {
            _turns.Enqueue(address); // its next one after every other address's
        }
        else
        {
            _byAddress.Remove(address);
        }

        return true;
    }

    // IPv4 clients seen through an IPv6 socket count as their IPv4 address; no address at all (a Unix socket) is one.
    private static IPAddress Key(IPEndPoint? client) =>
        client?.Address is not { } address ? IPAddress.None
        : address.IsIPv4MappedToIPv6 ? address.MapToIPv4()
        : address;
}
