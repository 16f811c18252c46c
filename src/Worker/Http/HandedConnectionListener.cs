using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Dispatch.Platform.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging;

namespace Dispatch.Worker.Http;

/// <summary>A Kestrel endpoint that is not a network address: connections arrive through <see cref="WorkerHttpServer.TryEnqueue"/>.</summary>
internal sealed class HandedEndPoint(HandedProtocol protocol) : EndPoint
{
    public HandedProtocol Protocol { get; } = protocol;

    public override string ToString() => Protocol switch
    {
        HandedProtocol.Http2 => "handed:h2",
        HandedProtocol.Tls => "handed:tls",
        _ => "handed:http1",
    };
}

/// <summary>
/// A connection handed over by the dispatcher, waiting for Kestrel's accept loop: its descriptor, made a
/// <see cref="System.Net.Sockets.Socket"/> only when the connection is taken (<see cref="Open"/>), or a socket already.
/// </summary>
/// <remarks>
/// The socket is made when the connection gets its turn, on the thread pool, and not at all for one dropped unserved:
/// made on the channel's thread it cost 15 µs per connection in a flood's ramp, where that thread's speed is how long
/// every hand-off waits (docs/floods.md). It is made from what the dispatcher said (<see cref="KnownSocket"/>), not by
/// asking the kernel.
/// </remarks>
internal readonly record struct PendingConnection(SafeSocketHandle? Handle, Socket? Socket, ReadOnlyMemory<byte> InitialBytes, HandedConnectionInfo Info)
{
    /// <summary>
    /// The connection's socket (made now from the descriptor unless given: <see cref="KnownSocket"/>). Throws as
    /// <see cref="System.Net.Sockets.Socket"/>'s constructor does for a descriptor it cannot use; one that is not a
    /// socket at all gives a socket of unknown type, which Kestrel then fails to serve and closes. A socketpair end
    /// (<see cref="HandedConnectionInfo.OverSocketPair"/>) is made by asking the kernel: the end points the dispatcher
    /// gave are the TCP connection's, not this descriptor's.
    /// </summary>
    public Socket Open(Serilog.ILogger? log = null) =>
        Socket ?? (Info.OverSocketPair ? new Socket(Handle!) : KnownSocket.Open(Handle!, Info.Local, Info.Client, log));

    /// <summary>Closes the connection unserved.</summary>
    public void Close()
    {
        if (Socket is not null)
            Socket.Dispose();
        else
            Handle!.Dispose();
    }
}

/// <summary>Per-connection feature: the dispatcher's metadata, and the initial bytes until the replay middleware takes them.</summary>
internal sealed class HandedConnectionFeature(HandedConnectionInfo info, ReadOnlyMemory<byte> initialBytes, Socket? socket = null) : IHandedConnectionFeature
{
    private ReadOnlyMemory<byte> _initialBytes = initialBytes;

    public HandedConnectionInfo Info { get; } = info;

    /// <summary>The connection's socket (the transport owns it; <see cref="DirectSocketWriter"/> writes to it).</summary>
    public Socket? Socket { get; } = socket;

    /// <summary>The connection's place among those being set up (<see cref="ConnectionAdmission"/>), given back once.</summary>
    public AdmissionTicket? Admission { get; init; }

    /// <summary>The client's address as <see cref="AddressConnections"/> counts it (null: not counted).</summary>
    public System.Net.IPAddress? CountedAs { get; init; }

    /// <summary>Returns the initial bytes once and forgets them.</summary>
    public ReadOnlyMemory<byte> TakeInitialBytes()
    {
        var bytes = _initialBytes;
        _initialBytes = default;
        return bytes;
    }
}

/// <summary>
/// The only transport registered with Kestrel: binds <see cref="HandedEndPoint"/>s and yields the connections queued for
/// them. Implements <see cref="IConnectionListenerFactorySelector"/> so Kestrel picks it for those endpoints (and no
/// socket transport is registered at all).
/// </summary>
internal sealed class HandedConnectionListenerFactory : IConnectionListenerFactory, IConnectionListenerFactorySelector, IDisposable
{
    /// <summary>
    /// What a connection's output pipe holds unsent before a write waits (Kestrel's default: 64 KiB): a client that
    /// does not read holds this much of the worker's memory, besides the kernel's socket buffer (docs/floods.md). Under
    /// 32 KiB, so that two whole TLS records (at most 16 KiB each, <see cref="Tls.TlsRecordLayer.RecordBuffer"/>) make a
    /// write wait: at 32 KiB two full records were a few bytes short of it, and a stalled reader held a third.
    /// </summary>
    internal const int MaxWriteBufferSize = 30 * 1024;

    private readonly SocketConnectionContextFactory _contextFactory;
    private readonly Func<HandedProtocol, ChannelReader<PendingConnection>> _queues;
    private readonly Action _connectionDropped;
    private readonly ConnectionAdmission _admission;
    private readonly AddressConnections _addresses;
    private readonly Serilog.ILogger _log;

    public HandedConnectionListenerFactory(
        Func<HandedProtocol, ChannelReader<PendingConnection>> queues,
        Action connectionDropped,
        ConnectionAdmission admission,
        AddressConnections addresses,
        ILoggerFactory loggerFactory,
        Serilog.ILogger log)
    {
        _log = log.ForContext<HandedConnectionListenerFactory>();
        _queues = queues;
        _connectionDropped = connectionDropped;
        _admission = admission;
        _addresses = addresses;
        var options = new SocketConnectionFactoryOptions { MaxWriteBufferSize = MaxWriteBufferSize };
        SetMemoryPoolFactory(options, TransportBlockPool.Instance);
        _contextFactory = new SocketConnectionContextFactory(options, loggerFactory.CreateLogger("Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets"));
    }

    /// <summary>
    /// The transport's memory (<see cref="TransportBlockPool"/>). Kestrel gives its own socket transport a pool through
    /// an option it keeps internal; made with the public constructor, the options leave the pipes on the shared array
    /// pool. Bound at compile time (NativeAOT keeps it): a Kestrel without this setter fails every worker's start, and
    /// the tests with it (<c>TransportBlockPoolTests</c>).
    /// </summary>
    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "set_MemoryPoolFactory")]
    private static extern void SetMemoryPoolFactory(SocketConnectionFactoryOptions options, IMemoryPoolFactory<byte> factory);

    public bool CanBind(EndPoint endpoint) => endpoint is HandedEndPoint;

    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default)
    {
        if (endpoint is not HandedEndPoint handed)
        {
            throw new NotSupportedException($"Endpoint {endpoint} is not a handed-connection endpoint.");
        }

        return ValueTask.FromResult<IConnectionListener>(
            new Listener(handed, _queues(handed.Protocol), _contextFactory, _connectionDropped, _admission, _addresses, _log));
    }

    public void Dispose() => _contextFactory.Dispose();

    private sealed class Listener(
        HandedEndPoint endPoint,
        ChannelReader<PendingConnection> queue,
        SocketConnectionContextFactory contextFactory,
        Action connectionDropped,
        ConnectionAdmission admission,
        AddressConnections addresses,
        Serilog.ILogger log) : IConnectionListener
    {
        private readonly CancellationTokenSource _unbound = new();
        private readonly AddressFairQueue _waiting = new(addresses.Open);
        private readonly Lock _waitingLock = new();

        public EndPoint EndPoint => endPoint;

        public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _unbound.Token);
            try
            {
                while (true)
                {
                    // Everything handed over so far joins its address's queue; then one place, then the next turn.
                    if (Collect() == 0 && !await queue.WaitToReadAsync(linked.Token).ConfigureAwait(false))
                    {
                        return null;
                    }

                    if (Collect() == 0)
                    {
                        continue;
                    }

                    var ticket = await admission.EnterAsync(linked.Token).ConfigureAwait(false);
                    Collect(); // what arrived during the wait takes its turn too
                    PendingConnection pending;
                    int waiting;
                    lock (_waitingLock)
                    {
                        if (!_waiting.TryTake(out pending))
                        {
                            ticket.Release(); // drained meanwhile (unbound)
                            continue;
                        }

                        waiting = _waiting.Count;
                    }

                    var connection = TryCreate(pending, ticket);
                    if (connection is not null)
                    {
                        if (log.IsEnabled(Serilog.Events.LogEventLevel.Debug))
                        {
                            // The order connections are taken in (the access log's is the order they finish in).
                            log.Debug(
                                "Connection {ConnectionId} from {ClientAddress} admitted; {Waiting} waiting",
                                pending.Info.ConnectionId,
                                pending.Info.Client?.Address.ToString(),
                                waiting);
                        }

                        return connection;
                    }

                    ticket.Release();
                }
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                // Unbound (server stopping) or Kestrel's own cancellation: no more connections.
            }

            return null;
        }

        public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
        {
            _unbound.Cancel();
            Drain();
            return ValueTask.CompletedTask;
        }

        public ValueTask DisposeAsync()
        {
            _unbound.Cancel();
            Drain();
            _unbound.Dispose();
            return ValueTask.CompletedTask;
        }

        private ConnectionContext? TryCreate(PendingConnection pending, AdmissionTicket ticket)
        {
            Socket socket;
            try
            {
                socket = pending.Open(log);
            }
            catch (Exception e) when (e is SocketException or ArgumentException or ObjectDisposedException)
            {
                // A descriptor the socket cannot be made from: nothing to serve.
                pending.Close();
                connectionDropped();
                return null;
            }

            if (!socket.Connected && socket.ProtocolType == ProtocolType.Tcp && pending.InitialBytes.IsEmpty && pending.Info.TlsPlaintext.IsEmpty)
            {
                // Reset before it got here (the socket, made from the handed descriptor, found no peer: getpeername
                // failed), with nothing of a request in hand: nothing can be served or sent. Kestrel would only set the
                // connection up to end it, throwing twice (its transport's Shutdown of a socket it takes for never
                // connected, and the reset read): dropped here instead, as when Create fails below.
                socket.Dispose();
                connectionDropped();
                return null;
            }

            ConnectionContext connection;
            try
            {
                // TCP_NODELAY is the listening socket's (the master sets it there: ListenerOptions),
                // which every connection accepted from it inherits on Linux.
                connection = contextFactory.Create(socket);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException)
            {
                // The client went away before we got to it (getpeername fails on a reset socket).
                socket.Dispose();
                connectionDropped();
                return null;
            }

            var info = pending.Info;
            if (info.Client is not null)
            {
                connection.RemoteEndPoint = info.Client;
            }

            if (info.Local is not null)
            {
                connection.LocalEndPoint = info.Local;
            }

            connection.ConnectionId = info.ConnectionId.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var countedAs = AddressConnections.Key(info.Client);
            addresses.Add(countedAs); // until the connection ends (WorkerHttpServer's connection middleware)
            connection.Features.Set<IHandedConnectionFeature>(new HandedConnectionFeature(info, pending.InitialBytes, socket) { Admission = ticket, CountedAs = countedAs });
            return connection;
        }

        // Moves what the channel holds into the per-address queues; returns how many wait there.
        private int Collect()
        {
            lock (_waitingLock)
            {
                while (queue.TryRead(out var pending))
                {
                    _waiting.Add(pending);
                }

                return _waiting.Count;
            }
        }

        private void Drain()
        {
            lock (_waitingLock)
            {
                while (queue.TryRead(out var pending) || _waiting.TryTake(out pending))
                {
                    pending.Close();
                    connectionDropped();
                }
            }
        }
    }
}
