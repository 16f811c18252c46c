using System.Buffers;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using Dispatch.Platform.Hosting;
using Dispatch.Platform.Interop;
using Dispatch.TlsDispatcher.Net;
using Dispatch.TlsDispatcher.Workers;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Dispatch.Wire.Payloads;
using Serilog;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// A TLS listener: read the ClientHello (bounded in size and by the handshake timeout), route on
/// the SNI before any key is used, complete the handshake with the vhost's certificate
/// (BouncyCastle, non-blocking, .NET crypto; or SslStream), then either hand the session itself to a
/// worker of the vhost's pool (<see cref="ConnectionMode.HandedTls"/>: pools whose workers say they run
/// the record layer, BouncyCastle engine only) or proxy plaintext to it over a fresh socketpair whose
/// other end travels with the connection's metadata.
/// </summary>
internal sealed partial class TlsTerminationFrontend : Frontend
{
    private const int BufferSize = 16 * 1024;

    // One maximal TLS record and its header: what arrives past the handshake stays far below Connection.MaxInitial.
    private const int HandshakeReceiveSize = BcTlsSession.MaxRecordLength + 5;
    private const string NoWorkerBody = "No worker is available for this site right now; try again shortly.\n";
    private static readonly byte[] NoWorkerResponse = System.Text.Encoding.ASCII.GetBytes(
        $"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {NoWorkerBody.Length}\r\nConnection: close\r\n\r\n{NoWorkerBody}");
    private static readonly string[] Http11Only = ["http/1.1"];
    private static readonly string[] H2AndHttp11 = ["h2", "http/1.1"];

    // Fatal alerts, TLS 1.2 record: content type 21, version 3.3, length 2, level 2 (fatal), description.
    private static readonly byte[] AlertUnrecognizedName = [21, 3, 3, 0, 2, 2, 112];
    private static readonly byte[] AlertDecodeError = [21, 3, 3, 0, 2, 2, 50];
    private static readonly byte[] AlertInternalError = [21, 3, 3, 0, 2, 2, 80];
    private static readonly byte[] AlertHandshakeFailure = [21, 3, 3, 0, 2, 2, 40];
    private static readonly byte[] PlainHttpOnTlsPort =
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 45\r\nConnection: close\r\n\r\nThis port speaks TLS: use https:// instead.\r\n"u8.ToArray();

    private readonly Func<RouteTable> _routes;
    private readonly WorkerPools _workers;

    public TlsTerminationFrontend(Socket listener, string localName, TrustedProxies proxies, Func<RouteTable> routes, WorkerPools workers, ReadinessPoller poller, ILogger log)
        : base(listener, localName, proxies, poller, log)
    {
        _routes = routes;
        _workers = workers;
    }

    public override string Name => "tls " + LocalName;

    protected override int PreludeSize => ClientHelloParser.MaxHandshakeLength + (4 * ClientHelloParser.RecordHeaderLength) + 64;

    protected override bool HandleOnAcceptLoop => false;

    protected override int PreludeTimeoutMs => _routes().Settings.HandshakeTimeoutMs;

    // The parser's lower bound on the ClientHello's length never reaches past the ClientHello itself.
    protected override int PreludeNeeds(ReadOnlySpan<byte> queued) =>
        ClientHelloParser.TryParse(queued, out _, out var needed, out _) == ClientHelloResult.Incomplete ? needed : 0;

    protected override async Task HandleAsync(Socket client, ulong id, ConnectionStart start)
    {
        var routes = _routes();
        var settings = routes.Settings;
        var hello = start.Buffer;
        var max = PreludeSize;
        using var handshake = new CancellationTokenSource(start.Remaining(settings.HandshakeTimeoutMs));
        var filled = start.Filled;
        var fresh = filled > 0;
        ClientHelloInfo? info;
        while (true)
        {
            if (!fresh)
            {
                int n;
                try
                {
                    n = await ReceiveAsync(start.Fd, hello.AsMemory(filled, max - filled), handshake.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    if (MayLogConnection())
                        Log.Information("Connection {ConnectionId} from {Client}: no ClientHello within {Timeout} ms", id, start.ClientText, settings.HandshakeTimeoutMs);
                    Interlocked.Increment(ref DispatcherMetrics.HandshakesTimeout);
                    return;
                }

                if (n == 0)
                    return;
                filled += n;
            }

            fresh = false;
            var result = ClientHelloParser.TryParse(hello.AsSpan(0, filled), out info, out _, out var error);
            if (result == ClientHelloResult.Ok)
                break;
            if (result == ClientHelloResult.NotTls)
            {
                if (MayLogConnection())
                    Log.Information("Connection {ConnectionId} from {Client}: not TLS", id, start.ClientText);
                Interlocked.Increment(ref DispatcherMetrics.HandshakesNotTls);
                await SendQuietlyAsync(client, hello[0] is >= (byte)'A' and <= (byte)'Z' ? PlainHttpOnTlsPort : AlertDecodeError).ConfigureAwait(false);
                return;
            }

            if (result == ClientHelloResult.Malformed || filled >= max)
            {
                if (MayLogConnection())
                    Log.Information("Connection {ConnectionId} from {Client}: malformed ClientHello: {Reason}", id, start.ClientText, error ?? "too large");
                Interlocked.Increment(ref DispatcherMetrics.HandshakesMalformed);
                await SendQuietlyAsync(client, AlertDecodeError).ConfigureAwait(false);
                return;
            }
        }

        var sni = info!.ServerName;
        var route = routes.Route(sni);
        if (route is not null && route.TlsMode == TlsModes.Passthrough)
        {
            // The tenant's worker terminates TLS with its own key: hand it the socket and the ClientHello.
            Poller.Remove(start.Fd);
            Interlocked.Increment(ref DispatcherMetrics.Passthrough);
            var meta = new Connection(id, ConnectionMode.PassthroughTls, AppProtocol.Http1, start.ClientText, LocalName, sni, null, null, hello.AsMemory(0, filled));
            if (!await _workers.HandOffAsync(route.Pool, meta, start.Fd, settings).ConfigureAwait(false))
            {
                Log.Warning("Connection {ConnectionId} ({Sni}): no worker for passthrough pool {Pool}; closing", id, sni, route.Pool);
                Interlocked.Increment(ref DispatcherMetrics.NoWorker);
                await SendQuietlyAsync(client, AlertInternalError).ConfigureAwait(false);
            }

            return;
        }

        var bc = route is null ? null : routes.CredentialsFor(route);
        var openssl = route is null ? null : routes.OpenSslCredentialsFor(route);
        if (route?.Identity is not null && bc is not null)
        {
            // Identity vhost: read the first request, verify its credentials, hand the session to the login's pool.
            await IdentityHandOffAsync(bc, route, hello.AsMemory(0, filled), id, start, sni, settings, handshake.Token).ConfigureAwait(false);
            return;
        }

        if (route is not null && bc is not null && openssl is null && routes.PoolPolicy(route.Pool).TlsHandOff)
        {
            // The worker takes the session itself: the handshake runs on the dispatcher's own epoll set (never the
            // runtime's), so that the descriptor can leave afterwards.
            await BouncyCastleHandOffAsync(bc, route, hello.AsMemory(0, filled), id, start, sni, settings, handshake.Token).ConfigureAwait(false);
            return;
        }

        // From here on the socket stays in this process: the runtime's own async I/O drives it.
        Poller.Remove(start.Fd);
        if (route is null || (bc is null && openssl is null))
        {
            if (MayLogConnection())
                Log.Information("Connection {ConnectionId} from {Client}: no TLS site for SNI {Sni}; unrecognized_name", id, start.ClientText, sni ?? "(none)");
            Interlocked.Increment(ref DispatcherMetrics.HandshakesUnknownName);
            await SendQuietlyAsync(client, AlertUnrecognizedName).ConfigureAwait(false);
            return;
        }

        Terminated? session;
        if (openssl is not null && !OpenSslCredentials.OffersAead(info))
        {
            if (MayLogConnection())
                Log.Information("Connection {ConnectionId} from {Client} ({Sni}): TLS handshake failed: the client offers no AEAD cipher suite", id, start.ClientText, sni);
            Interlocked.Increment(ref DispatcherMetrics.HandshakesFailed);
            await SendQuietlyAsync(client, AlertHandshakeFailure).ConfigureAwait(false);
            return;
        }

        if (openssl is not null)
        {
            session = await OpenSslHandshakeAsync(client, openssl, info, hello.AsMemory(0, filled), id, start, sni, handshake.Token).ConfigureAwait(false);
        }
        else
        {
            session = await BouncyCastleHandshakeAsync(client, bc!, route, hello.AsMemory(0, filled), id, start, sni, handshake.Token).ConfigureAwait(false);
        }

        if (session is null)
            return;

        Interlocked.Increment(ref DispatcherMetrics.HandshakesOk);
        await using (session.Stream.ConfigureAwait(false))
            await ProxyAsync(client, session, route, sni, id, start, settings).ConfigureAwait(false);
    }

    /// <summary>
    /// BouncyCastle handshake, then the hand-off: the client's socket, the session's keys and sequence numbers and
    /// the ciphertext read past the handshake go to a worker of the pool (<see cref="ConnectionMode.HandedTls"/>),
    /// which runs the record layer from then on. This process keeps nothing of the connection: the session is
    /// disposed, the exported secrets zeroed once sent, and the caller closes our copy of the descriptor. Without
    /// a worker the client still gets a 503 through TLS.
    /// </summary>
    private async Task BouncyCastleHandOffAsync(BcServerCredentials credentials, VhostRoute route, ReadOnlyMemory<byte> hello, ulong id, ConnectionStart start, string? sni, DispatcherSettings settings, CancellationToken timeout)
    {
        using var session = new BcTlsSession(credentials, route.OfferH2 ? H2AndHttp11 : Http11Only, tickets: SessionTicketKeys.Shared, vhost: route.Name);
        var buffer = KeptArrayPool.Instance.Rent(HandshakeReceiveSize);
        try
        {
            if (!await HandshakeOnPollerAsync(session, hello, buffer, id, start, sni, timeout).ConfigureAwait(false))
                return;
            Interlocked.Increment(ref DispatcherMetrics.HandshakesOk);
            var alpn = session.ApplicationProtocol;
            if (!session.TryExportForHandOff(out var state, out var remaining) || state is null)
            {
                Log.Error("Connection {ConnectionId} ({Sni}): the TLS session could not be exported; closing", id, sni);
                return;
            }

            Poller.Remove(start.Fd);
            var meta = new Connection(id, ConnectionMode.HandedTls, alpn == "h2" ? AppProtocol.Http2 : AppProtocol.Http1, start.ClientText, LocalName, sni, session.ProtocolVersion, session.CipherSuiteName, remaining, state);
            bool handed;
            try
            {
                handed = await _workers.HandOffAsync(route.Pool, meta, start.Fd, settings).ConfigureAwait(false);
            }
            finally
            {
                state.Clear();
            }

            if (handed)
            {
                Interlocked.Increment(ref DispatcherMetrics.HandedTls);
                return;
            }

            // The handshake is done, so the client can still be told in HTTP (HTTP/1.1 only: an h2 client gets a
            // close). The exported state is dropped; the session goes on writing from where it was.
            Interlocked.Increment(ref DispatcherMetrics.NoWorker);
            DispatcherMetrics.Response(503, route.Name, alpn != "h2" ? NoWorkerBody.Length : 0, start.AcceptedAt);
            if (alpn != "h2")
                session.WritePlaintext(NoWorkerResponse);
            session.Close();
            await SendFinalAsync(start.Fd, session, buffer).ConfigureAwait(false);
        }
        finally
        {
            KeptArrayPool.Instance.Return(buffer, clearArray: true);
        }
    }

    /// <summary>The BouncyCastle handshake on the dispatcher's own epoll set; false (logged, counted, the alert sent) when it did not complete.</summary>
    private async Task<bool> HandshakeOnPollerAsync(BcTlsSession session, ReadOnlyMemory<byte> hello, byte[] buffer, ulong id, ConnectionStart start, string? sni, CancellationToken timeout)
    {
        try
        {
            session.Offer(hello.Span);
            await SendOutputAsync(start.Fd, session, buffer, timeout).ConfigureAwait(false);
            while (!session.HandshakeComplete)
            {
                var n = await ReceiveAsync(start.Fd, buffer.AsMemory(0, HandshakeReceiveSize), timeout).ConfigureAwait(false);
                if (n == 0)
                {
                    if (MayLogConnection())
                        Log.Information("Connection {ConnectionId} from {Client} ({Sni}): the client closed the connection during the TLS handshake", id, start.ClientText, sni);
                    Interlocked.Increment(ref DispatcherMetrics.HandshakesFailed);
                    return false;
                }

                session.Offer(buffer, 0, n);
                await SendOutputAsync(start.Fd, session, buffer, timeout).ConfigureAwait(false);
            }

            return true;
        }
        catch (BcTlsException e)
        {
            if (MayLogConnection())
                Log.Information("Connection {ConnectionId} from {Client} ({Sni}): TLS handshake failed: {Reason}", id, start.ClientText, sni, e.Message);
            Interlocked.Increment(ref DispatcherMetrics.HandshakesFailed);
            await SendFinalAsync(start.Fd, session, buffer).ConfigureAwait(false);
            return false;
        }
        catch (OperationCanceledException)
        {
            if (MayLogConnection())
                Log.Information("Connection {ConnectionId} from {Client} ({Sni}): handshake not finished in time", id, start.ClientText, sni);
            Interlocked.Increment(ref DispatcherMetrics.HandshakesTimeout);
            return false;
        }
    }

    private async Task SendOutputAsync(int fd, BcTlsSession session, byte[] buffer, CancellationToken cancellationToken)
    {
        int n;
        while ((n = session.ReadOutputToNetwork(buffer, 0, buffer.Length)) > 0)
            await SendAllAsync(fd, buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Best effort: a pending alert, 503 or close_notify within a second.</summary>
    private async Task SendFinalAsync(int fd, BcTlsSession session, byte[] buffer)
    {
        try
        {
            using var timeout = new CancellationTokenSource(1000);
            await SendOutputAsync(fd, session, buffer, timeout.Token).ConfigureAwait(false);
            Libc.Shutdown(fd, Libc.SHUT_WR);
        }
        catch (Exception e) when (e is SysCallException or OperationCanceledException)
        {
            // The peer may be gone already.
        }
    }

    /// <summary>A terminated TLS connection, whichever engine did it.</summary>
    private sealed record Terminated(Stream Stream, string? Alpn, string? Protocol, string? Cipher, Func<Task> CloseAsync);

    private async Task<Terminated?> BouncyCastleHandshakeAsync(Socket client, BcServerCredentials credentials, VhostRoute route, ReadOnlyMemory<byte> hello, ulong id, ConnectionStart start, string? sni, CancellationToken timeout)
    {
        try
        {
            var tls = await BcTlsStream.AuthenticateAsServerAsync(client, new BcTlsSession(credentials, route.OfferH2 ? H2AndHttp11 : Http11Only, tickets: SessionTicketKeys.Shared, vhost: route.Name), hello, ownsSocket: false, timeout).ConfigureAwait(false);
            return new Terminated(tls, tls.Session.ApplicationProtocol, tls.Session.ProtocolVersion, tls.Session.CipherSuiteName, () => tls.CloseAsync());
        }
        catch (AuthenticationException e)
        {
            if (MayLogConnection())
                Log.Information("Connection {ConnectionId} from {Client} ({Sni}): {Reason}", id, start.ClientText, sni, e.Message);
            Interlocked.Increment(ref DispatcherMetrics.HandshakesFailed);
        }
        catch (OperationCanceledException)
        {
            if (MayLogConnection())
                Log.Information("Connection {ConnectionId} from {Client} ({Sni}): handshake not finished in time", id, start.ClientText, sni);
            Interlocked.Increment(ref DispatcherMetrics.HandshakesTimeout);
        }

        return null;
    }

    private async Task<Terminated?> OpenSslHandshakeAsync(Socket client, OpenSslCredentials credentials, ClientHelloInfo info, ReadOnlyMemory<byte> hello, ulong id, ConnectionStart start, string? sni, CancellationToken timeout)
    {
        var ssl = new SslStream(new PrefixedStream(hello, client), leaveInnerStreamOpen: false);
        try
        {
            await ssl.AuthenticateAsServerAsync(credentials.Select(info), timeout).ConfigureAwait(false);
            var protocol = ssl.SslProtocol switch
            {
                SslProtocols.Tls13 => "TLSv1.3",
                SslProtocols.Tls12 => "TLSv1.2",
                var other => other.ToString(),
            };
            var alpn = ssl.NegotiatedApplicationProtocol == default ? null : ssl.NegotiatedApplicationProtocol.ToString();
            return new Terminated(ssl, alpn, protocol, ssl.NegotiatedCipherSuite.ToString(), () => ssl.ShutdownAsync());
        }
        catch (Exception e) when (e is AuthenticationException or IOException or OperationCanceledException)
        {
            if (MayLogConnection())
                Log.Information("Connection {ConnectionId} from {Client} ({Sni}): TLS handshake failed: {Reason}", id, start.ClientText, sni, e.Message);
            Interlocked.Increment(ref e is OperationCanceledException ? ref DispatcherMetrics.HandshakesTimeout : ref DispatcherMetrics.HandshakesFailed);
            await ssl.DisposeAsync().ConfigureAwait(false);
            return null;
        }
    }

    /// <summary>Hands a socketpair end to a worker and pumps plaintext both ways until both sides are done.</summary>
    private async Task ProxyAsync(Socket client, Terminated tls, VhostRoute route, string? sni, ulong id, ConnectionStart start, DispatcherSettings settings)
    {
        var (mine, theirs) = IpcChannel.RawPair(Libc.SOCK_STREAM);
        using var plain = new Socket(new SafeSocketHandle(mine, ownsHandle: true));
        try
        {
            var meta = new Connection(
                id,
                ConnectionMode.TerminatedTls,
                tls.Alpn == "h2" ? AppProtocol.Http2 : AppProtocol.Http1,
                start.ClientText,
                LocalName,
                sni,
                tls.Protocol,
                tls.Cipher,
                ReadOnlyMemory<byte>.Empty);
            if (!await _workers.HandOffAsync(route.Pool, meta, theirs, settings).ConfigureAwait(false))
            {
                // The handshake is done, so the client can still be told in HTTP (HTTP/1.1 only: an h2 client gets a close).
                Interlocked.Increment(ref DispatcherMetrics.NoWorker);
                DispatcherMetrics.Response(503, route.Name, tls.Alpn != "h2" ? NoWorkerBody.Length : 0, start.AcceptedAt);
                if (tls.Alpn != "h2")
                    await tls.Stream.WriteAsync(NoWorkerResponse).ConfigureAwait(false);

                await tls.CloseAsync().ConfigureAwait(false);
                return;
            }
        }
        finally
        {
            Libc.Close(theirs);
        }

        var upstream = PumpClientToWorkerAsync(tls.Stream, plain, settings.SendTimeoutMs);
        var downstream = PumpWorkerToClientAsync(plain, tls, client, settings.SendTimeoutMs, id, start.ClientText);
        var first = await Task.WhenAny(upstream, downstream).ConfigureAwait(false);
        if (first == downstream)
        {
            // The worker finished (and the client was sent close_notify): give the client a moment to
            // finish its side, then drop it.
            await Task.WhenAny(upstream, Task.Delay(5000)).ConfigureAwait(false);
        }
        else
        {
            await downstream.ConfigureAwait(false);
        }
    }

    // Both pumps wait for data with a zero-byte read and only then rent a buffer, so an idle
    // keep-alive connection holds no buffer of ours.
    // Every write is bounded by the send timeout: a peer that reads nothing for that long (a client, or a worker that
    // stopped reading its socketpair) gets its socket reset, which ends the write and both pumps.
    private static async Task PumpClientToWorkerAsync(Stream tls, Socket plain, int sendTimeoutMs)
    {
        using var stalled = new CancellationTokenSource();
        using var reset = stalled.Token.UnsafeRegister(static state => Reset((Socket)state!), plain);
        try
        {
            while (true)
            {
                await tls.ReadAsync(Memory<byte>.Empty).ConfigureAwait(false);
                var buffer = KeptArrayPool.Instance.Rent(BufferSize);
                try
                {
                    var n = await tls.ReadAsync(buffer).ConfigureAwait(false);
                    if (n == 0)
                        break;
                    Interlocked.Add(ref DispatcherMetrics.BytesFromClients, n);
                    stalled.CancelAfter(sendTimeoutMs);
                    await plain.SendAsync(buffer.AsMemory(0, n), SocketFlags.None).ConfigureAwait(false);
                    stalled.CancelAfter(Timeout.Infinite); // disarms; TryReset would drop the registration
                    if (stalled.IsCancellationRequested)
                        break;
                }
                finally
                {
                    KeptArrayPool.Instance.Return(buffer);
                }
            }

            plain.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            plain.Shutdown(SocketShutdown.Both);
        }
    }

    private async Task PumpWorkerToClientAsync(Socket plain, Terminated tls, Socket client, int sendTimeoutMs, ulong id, string clientText)
    {
        using var stalled = new CancellationTokenSource();
        using var reset = stalled.Token.UnsafeRegister(static state => Reset((Socket)state!), client);
        try
        {
            while (true)
            {
                await plain.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None).ConfigureAwait(false);
                var buffer = KeptArrayPool.Instance.Rent(BufferSize);
                try
                {
                    var n = await plain.ReceiveAsync(buffer, SocketFlags.None).ConfigureAwait(false);
                    if (n == 0)
                        break;
                    stalled.CancelAfter(sendTimeoutMs);
                    await tls.Stream.WriteAsync(buffer.AsMemory(0, n)).ConfigureAwait(false);
                    stalled.CancelAfter(Timeout.Infinite); // disarms; TryReset would drop the registration
                    if (stalled.IsCancellationRequested)
                        break;
                    Interlocked.Add(ref DispatcherMetrics.BytesToClients, n);
                }
                finally
                {
                    KeptArrayPool.Instance.Return(buffer);
                }
            }

            // close_notify is a write too: bounded like the others.
            stalled.CancelAfter(sendTimeoutMs);
            await tls.CloseAsync().ConfigureAwait(false);
            client.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or InvalidOperationException)
        {
            try
            {
                client.Shutdown(SocketShutdown.Both);
            }
            catch (SocketException)
            {
            }
        }

        if (stalled.IsCancellationRequested && MayLogConnection())
            Log.Information("Connection {ConnectionId} from {Client}: nothing could be sent for {Timeout} ms; closed", id, clientText, sendTimeoutMs);
    }

    /// <summary>A stalled peer: reset (SO_LINGER 0) and shut down, so the pending write fails and nothing unsent is kept.</summary>
    private static void Reset(Socket socket)
    {
        try
        {
            socket.LingerState = new LingerOption(true, 0);
            socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Already closed.
        }
    }

    private static async Task SendQuietlyAsync(Socket client, byte[] bytes)
    {
        try
        {
            await client.SendAsync(bytes, SocketFlags.None).ConfigureAwait(false);
            client.Shutdown(SocketShutdown.Send);
        }
        catch (SocketException)
        {
        }
    }
}
