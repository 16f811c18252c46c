using System.Buffers.Binary;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;

namespace Dispatch.TlsDispatcher.Tests.Tls;

/// <summary>What a capture should contain.</summary>
public sealed record CapturedHello(string Name, byte[] Bytes, bool ExpectTls12, bool ExpectTls13, string[] ExpectAlpn);

/// <summary>
/// Real ClientHellos, recorded once per test run from openssl s_client, curl and .NET SslStream
/// connecting to a TcpListener that only reads the bytes (with its own minimal record reader, not
/// the parser under test) and then closes.
/// </summary>
public sealed class ClientHelloCaptures : IAsyncLifetime
{
    public const string ServerName = "x.example";

    public List<CapturedHello> Hellos { get; } = [];

    public async Task InitializeAsync()
    {
        string[] h2Http11 = ["h2", "http/1.1"];
        if (ExternalTool.Exists("openssl"))
        {
            string[] common = ["s_client", "-servername", ServerName, "-alpn", "h2,http/1.1"];
            await AddAsync("openssl default", true, true, h2Http11, port => ExternalTool.RunAsync("openssl", [.. common, "-connect", $"127.0.0.1:{port}"], timeout: TimeSpan.FromSeconds(10)));
            await AddAsync("openssl -tls1_2", true, false, h2Http11, port => ExternalTool.RunAsync("openssl", [.. common, "-tls1_2", "-connect", $"127.0.0.1:{port}"], timeout: TimeSpan.FromSeconds(10)));
            await AddAsync("openssl -tls1_3", false, true, h2Http11, port => ExternalTool.RunAsync("openssl", [.. common, "-tls1_3", "-connect", $"127.0.0.1:{port}"], timeout: TimeSpan.FromSeconds(10)));
        }

        if (ExternalTool.Exists("curl"))
        {
            await AddAsync("curl", true, true, h2Http11, port => ExternalTool.RunAsync("curl", ["-sk", "--max-time", "5", "--resolve", $"{ServerName}:{port}:127.0.0.1", $"https://{ServerName}:{port}/"], timeout: TimeSpan.FromSeconds(10)));
            await AddAsync("curl --tls-max 1.2", true, false, h2Http11, port => ExternalTool.RunAsync("curl", ["-sk", "--max-time", "5", "--tlsv1.2", "--tls-max", "1.2", "--resolve", $"{ServerName}:{port}:127.0.0.1", $"https://{ServerName}:{port}/"], timeout: TimeSpan.FromSeconds(10)));
        }

        await AddAsync("SslStream default", true, true, h2Http11, port => SslStreamClientAsync(port, SslProtocols.None, h2Http11));
        await AddAsync("SslStream Tls12", true, false, ["http/1.1"], port => SslStreamClientAsync(port, SslProtocols.Tls12, ["http/1.1"]));
        await AddAsync("SslStream Tls13", false, true, ["h2"], port => SslStreamClientAsync(port, SslProtocols.Tls13, ["h2"]));
    }

    public Task DisposeAsync() => Task.CompletedTask;

    private static async Task<int> SslStreamClientAsync(int port, SslProtocols protocols, string[] alpn)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, port);
        using var ssl = new SslStream(client.GetStream());
        try
        {
            await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
            {
                TargetHost = ServerName,
                EnabledSslProtocols = protocols,
                ApplicationProtocols = [.. alpn.Select(a => new SslApplicationProtocol(a))],
                RemoteCertificateValidationCallback = (_, _, _, _) => false,
            });
        }
        catch (Exception e) when (e is AuthenticationException or IOException)
        {
            // Expected: the capture server hangs up.
        }

        return 0;
    }

    private async Task AddAsync<T>(string name, bool tls12, bool tls13, string[] alpn, Func<int, Task<T>> client)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        Task<byte[]> capture = CaptureOneAsync(listener);
        Task<T> run = client(port);
        byte[] bytes = await capture.WaitAsync(TimeSpan.FromSeconds(15));
        await run.WaitAsync(TimeSpan.FromSeconds(15));
        Hellos.Add(new CapturedHello(name, bytes, tls12, tls13, alpn));
    }

    /// <summary>Reads TLS records until the first handshake message is complete; returns exactly those records.</summary>
    private static async Task<byte[]> CaptureOneAsync(TcpListener listener)
    {
        using Socket socket = await listener.AcceptSocketAsync();
        var data = new List<byte>();
        byte[] buffer = new byte[4096];
        int handshakeNeeded = -1;
        int handshakeHave = 0;
        int recordsEnd = 0;
        while (true)
        {
            // Complete records available?
            while (data.Count - recordsEnd >= 5)
            {
                int length = (data[recordsEnd + 3] << 8) | data[recordsEnd + 4];
                if (data.Count - recordsEnd < 5 + length)
                    break;
                if (handshakeNeeded < 0 && handshakeHave == 0 && length >= 4)
                    handshakeNeeded = 4 + ((data[recordsEnd + 6] << 16) | (data[recordsEnd + 7] << 8) | data[recordsEnd + 8]);
                handshakeHave += length;
                recordsEnd += 5 + length;
                if (handshakeNeeded >= 0 && handshakeHave >= handshakeNeeded)
                    return [.. data.GetRange(0, recordsEnd)];
            }

            int n = await socket.ReceiveAsync(buffer, SocketFlags.None);
            if (n == 0)
                throw new EndOfStreamException($"client closed after {data.Count} bytes");
            data.AddRange(buffer.AsSpan(0, n));
        }
    }

    /// <summary>Re-frames a single-record capture into records of at most <paramref name="fragment"/> handshake bytes.</summary>
    public static byte[] Fragment(byte[] singleRecord, int fragment)
    {
        ushort version = BinaryPrimitives.ReadUInt16BigEndian(singleRecord.AsSpan(1));
        ReadOnlySpan<byte> handshake = singleRecord.AsSpan(5);
        var output = new List<byte>();
        for (int p = 0; p < handshake.Length; p += fragment)
        {
            int n = Math.Min(fragment, handshake.Length - p);
            output.Add(22);
            output.Add((byte)(version >> 8));
            output.Add((byte)version);
            output.Add((byte)(n >> 8));
            output.Add((byte)n);
            output.AddRange(handshake.Slice(p, n));
        }

        return [.. output];
    }
}
