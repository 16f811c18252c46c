using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;
using Dispatch.TlsDispatcher.Tls;

namespace Dispatch.TlsDispatcher.Tests.Tls;

/// <summary>What the server did with one connection.</summary>
public sealed record ServerConnectionResult(
    string? ServerName,
    string? ApplicationProtocol,
    string? CipherSuiteName,
    string? ProtocolVersion,
    BcKeyType? KeyType,
    ushort? SignatureScheme,
    byte? AlertSent,
    byte? AlertReceived,
    bool HandshakeComplete,
    bool TruncatedByPeer,
    long BytesReceived,
    Exception? Error,
    bool TicketOffered = false,
    bool Resumed = false,
    bool TicketIssued = false);

/// <summary>
/// A tiny TLS server on 127.0.0.1 running the engine the dispatcher uses: read the ClientHello with
/// <see cref="ClientHelloParser"/>, choose credentials by SNI, <see cref="BcTlsStream.AuthenticateAsServerAsync(System.Net.Sockets.Socket, BcTlsSession, ReadOnlyMemory{byte}, bool, CancellationToken)"/>,
/// then serve a toy protocol: "GET " gets an HTTP/1.1 response and a close; "SINK" + uint64 n reads n bytes and
/// answers "OK"; "SRC " + uint64 n writes n bytes; "DUP " + uint64 n reads n bytes while writing n bytes;
/// anything else is echoed until the client closes.
/// </summary>
public sealed class TlsTestServer : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _acceptLoop;
    private readonly Channel<ServerConnectionResult> _results = Channel.CreateUnbounded<ServerConnectionResult>();
    private readonly List<Task> _connections = [];
    private readonly int? _socketBufferSize;

    public TlsTestServer(
        IReadOnlyList<string>? applicationProtocols = null,
        BcKeyExchangeImplementation keyExchange = BcKeyExchangeImplementation.DotNet,
        Func<string?, BcServerCredentials>? route = null,
        int? socketBufferSize = null)
    {
        _socketBufferSize = socketBufferSize;
        ApplicationProtocols = applicationProtocols ?? ["h2", "http/1.1"];
        KeyExchange = keyExchange;
        Route = route ?? DefaultRoute;
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start(512);
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    public int Port { get; }

    /// <summary>This server's session-ticket keys (TLS 1.3 resumption; tickets are bound to the SNI's vhost).</summary>
    public SessionTicketKeys Tickets { get; } = new();

    public IReadOnlyList<string> ApplicationProtocols { get; }

    public BcKeyExchangeImplementation KeyExchange { get; }

    public Func<string?, BcServerCredentials> Route { get; }

    public static BcServerCredentials DefaultRoute(string? serverName) => serverName switch
    {
        "rsa.example" => TestPki.Shared.RsaOnly,
        "ecdsa.example" => TestPki.Shared.EcdsaOnly,
        _ => TestPki.Shared.Both,
    };

    public async Task<ServerConnectionResult> NextResultAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(20));
        return await _results.Reader.ReadAsync(cts.Token);
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptSocketAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            socket.NoDelay = true;
            if (_socketBufferSize is int size)
            {
                socket.ReceiveBufferSize = size;
                socket.SendBufferSize = size;
            }
            lock (_connections)
                _connections.Add(Task.Run(() => HandleAsync(socket)));
        }
    }

    private async Task HandleAsync(Socket socket)
    {
        string? serverName = null;
        BcTlsStream? stream = null;
        BcTlsSession? session = null;
        long received = 0;
        try
        {
            using var handshakeTimeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            handshakeTimeout.CancelAfter(TimeSpan.FromSeconds(10));

            // Route from the ClientHello before any key is used.
            byte[] hello = new byte[ClientHelloParser.RecordHeaderLength + ClientHelloParser.MaxHandshakeLength + 4 + 1024];
            int length = 0;
            ClientHelloInfo? info;
            while (true)
            {
                ClientHelloResult result = ClientHelloParser.TryParse(hello.AsSpan(0, length), out info, out int needed, out string? error);
                if (result == ClientHelloResult.Ok)
                    break;
                if (result != ClientHelloResult.Incomplete)
                    throw new InvalidDataException($"ClientHello {result}: {error}");
                int n = await socket.ReceiveAsync(hello.AsMemory(length), SocketFlags.None, handshakeTimeout.Token);
                if (n == 0)
                    throw new EndOfStreamException("closed before the ClientHello");
                length += n;
            }

            serverName = info!.ServerName;
            session = new BcTlsSession(Route(serverName), ApplicationProtocols, KeyExchange, tickets: Tickets, vhost: serverName ?? "(no name)");
            stream = await BcTlsStream.AuthenticateAsServerAsync(socket, session, hello.AsMemory(0, length), ownsSocket: true, handshakeTimeout.Token);
            received = await ServeAsync(stream);
            await stream.DisposeAsync();
            Report(serverName, session, stream, received, null);
        }
        catch (Exception e)
        {
            if (stream is not null)
                await stream.DisposeAsync();
            else
                socket.Dispose();
            Report(serverName, session, stream, received, e);
        }
    }

    private void Report(string? serverName, BcTlsSession? session, BcTlsStream? stream, long received, Exception? error)
    {
        _results.Writer.TryWrite(new ServerConnectionResult(
            serverName,
            session?.ApplicationProtocol,
            session?.CipherSuiteName,
            session?.ProtocolVersion,
            session?.CertificateKeyType,
            session?.SignatureScheme,
            session?.AlertSent,
            session?.AlertReceived,
            session?.HandshakeComplete ?? false,
            stream?.TruncatedByPeer ?? false,
            received,
            error,
            session?.TicketOffered ?? false,
            session?.Resumed ?? false,
            session?.TicketIssued ?? false));
    }

    private static async Task<long> ServeAsync(BcTlsStream stream)
    {
        byte[] buffer = new byte[64 * 1024];
        long total = 0;
        while (true)
        {
            int n = await stream.ReadAsync(buffer);
            if (n == 0)
                return total;
            total += n;
            while (n < 12 && (IsPrefixOf(buffer.AsSpan(0, n), "SINK"u8) || IsPrefixOf(buffer.AsSpan(0, n), "SRC "u8) || IsPrefixOf(buffer.AsSpan(0, n), "DUP "u8)))
            {
                // Make sure a command header is complete before deciding.
                int m = await stream.ReadAsync(buffer.AsMemory(n));
                if (m == 0)
                    break;
                n += m;
                total += m;
            }

            if (buffer.AsSpan(0, n).StartsWith("GET "u8) || buffer.AsSpan(0, n).StartsWith("PUT "u8))
            {
                total += await ServeHttpAsync(stream, buffer, n);
                return total;
            }

            ReadOnlySpan<byte> first = buffer.AsSpan(0, n);

            if (first.StartsWith("SINK"u8) && n >= 12)
            {
                long want = BinaryPrimitives.ReadInt64BigEndian(first.Slice(4));
                long got = n - 12;
                while (got < want)
                {
                    int m = await stream.ReadAsync(buffer);
                    if (m == 0)
                        throw new EndOfStreamException($"sink: {got} of {want}");
                    got += m;
                    total += m;
                }

                await stream.WriteAsync("OK"u8.ToArray());
                continue;
            }

            if (first.StartsWith("DUP "u8) && n >= 12)
            {
                // Read and write at the same time on the one stream.
                long want = BinaryPrimitives.ReadInt64BigEndian(first.Slice(4));
                long already = n - 12;
                Task<long> reader = Task.Run(async () =>
                {
                    byte[] inbound = new byte[64 * 1024];
                    long got = already;
                    while (got < want)
                    {
                        int m = await stream.ReadAsync(inbound);
                        if (m == 0)
                            throw new EndOfStreamException($"duplex: {got} of {want}");
                        got += m;
                    }

                    return got;
                });
                byte[] outbound = new byte[100_000];
                for (long sent = 0; sent < want;)
                {
                    int chunk = (int)Math.Min(outbound.Length, want - sent);
                    await stream.WriteAsync(outbound.AsMemory(0, chunk));
                    sent += chunk;
                }

                total += await reader;
                continue;
            }

            if (first.StartsWith("SRC "u8) && n >= 12)
            {
                long want = BinaryPrimitives.ReadInt64BigEndian(first.Slice(4));
                byte[] data = new byte[256 * 1024];
                for (long sent = 0; sent < want;)
                {
                    int chunk = (int)Math.Min(data.Length, want - sent);
                    await stream.WriteAsync(data.AsMemory(0, chunk));
                    sent += chunk;
                }

                continue;
            }

            // Echo from here on, including this chunk.
            while (n > 0)
            {
                await stream.WriteAsync(buffer.AsMemory(0, n));
                n = await stream.ReadAsync(buffer);
                total += n;
            }

            return total;
        }
    }

    /// <summary>
    /// Minimal HTTP/1.1 for curl: "GET /bytes/N" answers N zero bytes; "PUT" reads Content-Length bytes and answers
    /// their count; any other GET answers "hello". One request, then close_notify.
    /// </summary>
    private static async Task<long> ServeHttpAsync(BcTlsStream stream, byte[] buffer, int n)
    {
        long extra = 0;
        int headEnd;
        while ((headEnd = buffer.AsSpan(0, n).IndexOf("\r\n\r\n"u8)) < 0)
        {
            int m = await stream.ReadAsync(buffer.AsMemory(n));
            if (m == 0)
                return extra;
            n += m;
            extra += m;
        }

        string head = Encoding.ASCII.GetString(buffer, 0, headEnd);
        string target = head.Split(' ')[1];
        string body = "hello";
        if (head.StartsWith("PUT ", StringComparison.Ordinal))
        {
            string lengthLine = head.Split("\r\n").First(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
            long length = long.Parse(lengthLine["Content-Length:".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
            long got = n - headEnd - 4;
            while (got < length)
            {
                int m = await stream.ReadAsync(buffer);
                if (m == 0)
                    throw new EndOfStreamException($"PUT body: {got} of {length}");
                got += m;
                extra += m;
            }

            body = got.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        else if (target.StartsWith("/bytes/", StringComparison.Ordinal))
        {
            long length = long.Parse(target["/bytes/".Length..], System.Globalization.CultureInfo.InvariantCulture);
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"));
            byte[] data = new byte[256 * 1024];
            for (long sent = 0; sent < length;)
            {
                int chunk = (int)Math.Min(data.Length, length - sent);
                await stream.WriteAsync(data.AsMemory(0, chunk));
                sent += chunk;
            }

            await stream.CloseAsync();
            return extra;
        }

        await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n{body}"));
        await stream.CloseAsync();
        return extra;
    }

    private static bool IsPrefixOf(ReadOnlySpan<byte> data, ReadOnlySpan<byte> command)
        => data.Length >= command.Length ? data.StartsWith(command) : command.StartsWith(data);

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        await _acceptLoop;
        Task[] pending;
        lock (_connections)
            pending = [.. _connections];
        await Task.WhenAny(Task.WhenAll(pending), Task.Delay(TimeSpan.FromSeconds(5)));
        _stop.Dispose();
    }
}
