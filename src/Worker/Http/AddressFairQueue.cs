using System.Net;
using Dispatch.Platform.Net;

namespace Dispatch.Worker.Http;

/// <summary>
/// Handed connections waiting for Kestrel (<see cref="ConnectionAdmission"/>), one queue per client address, the
/// addresses taking turns: one connection per turn, in the order the turns were queued. An address with fewer than
/// <see cref="LightBelow"/> connections open in the worker (<see cref="AddressConnections"/>: a visitor, a browser)
/// has its turns before those of an address with more (a flood, a big NAT), <see cref="LightPerHeavy"/> to one while
/// both wait, so that the heavy ones still move. A flood from one address, or from a hundred, then delays another
/// client's connection by at most one of its own. Not thread-safe: its listener locks.
/// </summary>
internal sealed class AddressFairQueue(Func<IPAddress, int>? openFrom = null)
{
    /// <summary>Fewer connections than this open from an address: its turns come first (<see cref="AddressTurns"/>).</summary>
    internal const int LightBelow = AddressTurns.LightBelow;

    /// <summary>Turns of light addresses before one of a heavy address, when both wait.</summary>
    internal const int LightPerHeavy = AddressTurns.LightPerHeavy;

    private readonly Dictionary<IPAddress, Queue<PendingConnection>> _byAddress = [];
    private readonly Queue<IPAddress> _light = new();
    private readonly Queue<IPAddress> _heavy = new();
    private int _lightInARow;

    public int Count { get; private set; }

    public void Add(PendingConnection pending)
    {
        var address = AddressConnections.Key(pending.Info.Client);
        if (!_byAddress.TryGetValue(address, out var queue))
        {
            queue = new Queue<PendingConnection>();
            _byAddress[address] = queue;
            QueueTurn(address);
        }

        queue.Enqueue(pending);
        Count++;
    }

    public bool TryTake(out PendingConnection pending)
    {
        var heavy = AddressTurns.HeavyNext(_light.Count > 0, _heavy.Count > 0, _lightInARow);
        if (!(heavy ? _heavy : _light).TryDequeue(out var address))
        {
            pending = default;
            return false;
        }

        _lightInARow = heavy ? 0 : _lightInARow + 1;
        var queue = _byAddress[address];
        pending = queue.Dequeue();
        Count--;
        if (queue.Count > 0)
        {
            QueueTurn(address); // its next one after the others' (light or heavy as it is now)
        }
        else
        {
            _byAddress.Remove(address);
        }

        return true;
    }

    private void QueueTurn(IPAddress address) =>
        ((openFrom?.Invoke(address) ?? 0) < LightBelow ? _light : _heavy).Enqueue(address);
}
