using System.Net.Sockets;
using Dispatch.Master.Config;
using Dispatch.Platform.Net;
using Dispatch.Wire;

namespace Dispatch.Master.Sockets;

/// <summary>
/// The sockets the master binds and only passes on: per dispatcher slot its own listening sockets (SO_REUSEPORT: the
/// kernel spreads connections over the slots), and the Prometheus endpoint's socket (loopback), served by the
/// dispatcher of slot 0. The master never accepts on them.
/// </summary>
internal sealed class ListeningSockets : IDisposable
{
    private readonly List<List<Socket>> _slots = [];

    /// <summary>The metrics listener, or null without <c>operations.metricsListen</c>.</summary>
    public Socket? Metrics { get; private set; }

    /// <summary>Binds every listener once per slot (and the metrics listener), failing with the listener named.</summary>
    public void Open(DispatchConfig config)
    {
        var n = config.Dispatcher.Processes;
        if (n > 1)
        {
            // The slots share each port through SO_REUSEPORT, which another root process could join as well: first
            // prove that no one listens there (a plain bind fails with EADDRINUSE on any listening socket).
            foreach (var l in config.Listen)
                Bind(l, reusePort: false, listen: false).Dispose();
        }

        for (var slot = 0; slot < n; slot++)
            _slots.Add([.. config.Listen.Select(l => Bind(l, reusePort: n > 1))]);
        if (config.Operations.MetricsListen is { } metricsAt)
            Metrics = Bind(new ListenConfig(metricsAt, ListenerProtocols.Metrics, []), reusePort: false);
    }

    public IReadOnlyList<Socket> For(int slot) => _slots[slot];

    /// <summary>
    /// Closes the master's copies. Once the dispatchers have closed theirs, new connections are refused at once
    /// instead of waiting in a backlog no one will accept from.
    /// </summary>
    public void Dispose()
    {
        foreach (var slot in _slots)
        {
            foreach (var s in slot)
                s.Dispose();
        }

        Metrics?.Dispose();
    }

    private static Socket Bind(ListenConfig l, bool reusePort, bool listen = true)
    {
        var socket = new Socket(l.Endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            // SO_REUSEADDR alone (restart over TIME_WAIT). Not SocketOptionName.ReuseAddress: on Linux .NET sets
            // SO_REUSEPORT with it, and a second master then shared our ports silently instead of failing.
            socket.SetRawSocketOption(1 /* SOL_SOCKET */, 2 /* SO_REUSEADDR */, BitConverter.GetBytes(1));
            if (reusePort)
                socket.SetRawSocketOption(1 /* SOL_SOCKET */, 15 /* SO_REUSEPORT */, BitConverter.GetBytes(1));
            if (l.Endpoint.AddressFamily == AddressFamily.InterNetworkV6)
                socket.DualMode = false;
            socket.Bind(l.Endpoint);
            // Before listen: every connection the kernel completes from then on inherits them (ListenerOptions).
            if (l.Protocol is ListenerProtocols.Http or ListenerProtocols.Tls)
                ListenerOptions.Apply(socket);
            if (listen)
                socket.Listen(4096);
            return socket;
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new SocketException((int)e.SocketErrorCode, $"{l}: {e.Message}");
        }
    }
}
