using System.Net;

namespace Dispatch.Worker.Http;

/// <summary>
/// The connections a worker has open per client address (those Kestrel has taken, until they end): what
/// <see cref="AddressFairQueue"/> gives the next turn by. Thread-safe.
/// </summary>
internal sealed class AddressConnections
{
    private readonly Dictionary<IPAddress, int> _open = [];
    private readonly Lock _lock = new();

    /// <summary>Addresses with a connection open (a leak shows here).</summary>
    public int Addresses
    {
        get
        {
            lock (_lock)
            {
                return _open.Count;
            }
        }
    }

    /// <summary>The key of a client: IPv4 clients seen through an IPv6 socket count as their IPv4 address; no address at all (a Unix socket) is one.</summary>
    public static IPAddress Key(IPEndPoint? client) =>
        client?.Address is not { } address ? IPAddress.None
        : address.IsIPv4MappedToIPv6 ? address.MapToIPv4()
        : address;

    public int Open(IPAddress address)
    {
        lock (_lock)
        {
            return _open.GetValueOrDefault(address);
        }
    }

    public void Add(IPAddress address)
    {
        lock (_lock)
        {
            _open[address] = _open.GetValueOrDefault(address) + 1;
        }
    }

    public void Remove(IPAddress address)
    {
        lock (_lock)
        {
            if (_open.TryGetValue(address, out var open))
            {
                if (open <= 1)
                {
                    _open.Remove(address);
                }
                else
                {
                    _open[address] = open - 1;
                }
            }
        }
    }
}
