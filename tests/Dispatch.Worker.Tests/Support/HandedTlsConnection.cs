using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Dispatch.Wire.Tls;
using Dispatch.Worker.Http;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Security;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;

namespace Dispatch.Worker.Tests.Support;

/// <summary>
/// A TLS connection handed to a worker as the dispatcher will hand it (mode HandedTls): a BouncyCastle client on a real
/// TCP socket completes a handshake with a BouncyCastle server fed record by record (so nothing past the handshake is
/// read), the server's keys become the session state, and the server end of the socket goes to
/// <see cref="WorkerHttpServer.TryEnqueue"/>. The client then speaks through its own record layer (<see cref="Stream"/>),
/// or, for inputs no real client sends, through <see cref="Raw"/> with a copy of the keys.
/// </summary>
internal sealed class HandedTlsConnection : IDisposable
{
    private static readonly SecureRandom s_random = new();
    private static readonly Lazy<(AsymmetricKeyParameter Key, byte[] Certificate)> s_identity = new(CreateIdentity);

    private HandedTlsConnection(Socket socket, TlsClientProtocol client, TlsSessionState keys, HandedConnectionInfo info)
    {
        Socket = socket;
        Client = client;
        Keys = keys;
        Info = info;
    }

    /// <summary>The client's socket.</summary>
    public Socket Socket { get; }

    /// <summary>The BouncyCastle client (its record layer: <see cref="Stream"/>).</summary>
    public TlsClientProtocol Client { get; }

    public Stream Stream => Client.Stream;

    /// <summary>A copy of the handed session's keys (the worker clears its own).</summary>
    public TlsSessionState Keys { get; }

    public HandedConnectionInfo Info { get; }

    /// <summary>Handshakes and hands the server end over; <paramref name="readInitial"/> reads the bytes the "dispatcher" read past the handshake.</summary>
    public static async Task<HandedTlsConnection> OpenAsync(
        WorkerHttpServer server,
        ushort version,
        int suite,
        HandedProtocol protocol = HandedProtocol.Http1,
        long id = 1,
        Func<Socket, Task<byte[]>>? readInitial = null,
        Func<TlsSessionState, TlsSessionState>? alter = null,
        Func<TlsClientProtocol, Task>? beforeHandOff = null)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Server.NoDelay = true; // as the dispatcher's listeners: inherited by each accepted connection
        listener.Start();
        var clientSocket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        Socket serverSocket;
        try
        {
            await clientSocket.ConnectAsync(IPAddress.Loopback, ((IPEndPoint)listener.LocalEndpoint).Port, timeout.Token);
            serverSocket = await listener.AcceptSocketAsync(timeout.Token);
        }
        finally
        {
            listener.Stop();
        }

        try
        {
            var crypto = new BcTlsCrypto(s_random);
            var bcVersion = version == TlsSessionState.Tls13 ? ProtocolVersion.TLSv13 : ProtocolVersion.TLSv12;
            var clientTask = Task.Run(() =>
            {
                var client = new TlsClientProtocol(new NetworkStream(clientSocket, ownsSocket: false));
                client.Connect(new BcTlsTestClient(crypto, bcVersion, suite, protocol == HandedProtocol.Http2 ? "h2" : "http/1.1"));
                return client;
            });
            var (key, der) = s_identity.Value;
            var tlsServer = new BcTlsTestServer(crypto, bcVersion, suite, key, crypto.CreateCertificate(der));
            var handshake = new TlsServerProtocol();
            handshake.Accept(tlsServer);
            while (tlsServer.Session is null)
            {
                var record = await ReadRecordAsync(serverSocket, clientTask, timeout.Token);
                handshake.OfferInput(record);
                await SendOutputAsync(handshake, serverSocket);
            }

            await SendOutputAsync(handshake, serverSocket);
            var bc = await clientTask.WaitAsync(timeout.Token);
            if (beforeHandOff is not null)
            {
                await beforeHandOff(bc);
            }

            var session = tlsServer.Session;
            var keys = new TlsSessionState(
                session.Version, session.CipherSuite, [.. session.ClientSecret], [.. session.ServerSecret], [.. session.ClientIv], [.. session.ServerIv], session.ReadSequence, session.WriteSequence);
            var initial = readInitial is null ? [] : await readInitial(serverSocket);
            var info = new HandedConnectionInfo(
                id, null, null, "a.localhost", version == TlsSessionState.Tls13 ? "TLSv1.3" : "TLSv1.2", $"0x{suite:X4}", protocol, alter is null ? session : alter(session));
            if (!server.TryEnqueue(serverSocket, initial, info))
            {
                throw new InvalidOperationException("the worker did not take the connection");
            }

            return new HandedTlsConnection(clientSocket, bc, keys, info);
        }
        catch
        {
            clientSocket.Dispose();
            serverSocket.Dispose();
            throw;
        }
    }

    /// <summary>Reads exactly <paramref name="count"/> bytes (a partial record, as a dispatcher might have read).</summary>
    public static Func<Socket, Task<byte[]>> ReadExactly(int count) => async socket =>
    {
        var buffer = new byte[count];
        var read = 0;
        while (read < count)
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None);
            if (n == 0)
            {
                throw new IOException("closed before the initial bytes");
            }

            read += n;
        }

        return buffer;
    };

    /// <summary>A client speaking records by hand with a copy of the keys (the BouncyCastle client must not be used after).</summary>
    public RawTlsClient Raw() => new(Socket, Keys);

    public void Dispose() => Socket.Dispose();

    private static async Task<byte[]> ReadRecordAsync(Socket socket, Task client, CancellationToken cancellationToken)
    {
        var header = new byte[5];
        await ReceiveExactlyAsync(socket, header, client, cancellationToken);
        var record = new byte[5 + ((header[3] << 8) | header[4])];
        header.CopyTo(record, 0);
        await ReceiveExactlyAsync(socket, record.AsMemory(5), client, cancellationToken);
        return record;
    }

    private static async Task ReceiveExactlyAsync(Socket socket, Memory<byte> buffer, Task client, CancellationToken cancellationToken)
    {
        var read = 0;
        while (read < buffer.Length)
        {
            var receive = socket.ReceiveAsync(buffer[read..], SocketFlags.None, cancellationToken).AsTask();
            if (await Task.WhenAny(receive, client) == client && client.IsFaulted)
            {
                await client; // the client's handshake failed: its exception says why
            }

            var n = await receive;
            if (n == 0)
            {
                throw new IOException("the client closed during the handshake");
            }

            read += n;
        }
    }

    private static async Task SendOutputAsync(TlsServerProtocol handshake, Socket socket)
    {
        var available = handshake.GetAvailableOutputBytes();
        if (available == 0)
        {
            return;
        }

        var output = new byte[available];
        handshake.ReadOutput(output, 0, available);
        await socket.SendAsync(output, SocketFlags.None);
    }

    private static (AsymmetricKeyParameter, byte[]) CreateIdentity()
    {
        using var ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=a.localhost", ecdsa, HashAlgorithmName.SHA256);
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        return (PrivateKeyFactory.CreateKey(ecdsa.ExportPkcs8PrivateKey()), certificate.RawData);
    }
}
