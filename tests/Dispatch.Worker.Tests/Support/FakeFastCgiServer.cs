using System.Buffers.Binary;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace Dispatch.Worker.Tests.Support;

/// <summary>One request as a fake FastCGI application received it.</summary>
internal sealed record FakeFastCgiRequest(Dictionary<string, string> Params, long BodyLength, string BodySha256, byte Flags);

/// <summary>
/// A hand-written FastCGI application on a Unix socket (written from the specification, independently of the client
/// under test): reads BEGIN_REQUEST, PARAMS and STDIN, then lets a behaviour answer — well, or badly. Counts connections.
/// </summary>
internal sealed class FakeFastCgiServer : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private readonly List<Task> _connections = [];
    private int _accepted;
    private int _requests;

    public FakeFastCgiServer(string path, Func<FakeFastCgiRequest, Stream, Task<bool>> behaviour)
    {
        Path = path;
        Behaviour = behaviour;
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(path));
        _listener.Listen(16);
        _accepting = AcceptAsync();
    }

    public string Path { get; }

    /// <summary>Answers a request; returns false to close the connection afterwards.</summary>
    public Func<FakeFastCgiRequest, Stream, Task<bool>> Behaviour { get; set; }

    public int Accepted => Volatile.Read(ref _accepted);

    /// <summary>Complete requests received (BEGIN_REQUEST to the empty STDIN record).</summary>
    public int Requests => Volatile.Read(ref _requests);

    public static byte[] Record(byte type, ReadOnlySpan<byte> content, ushort requestId = 1, byte version = 1, byte padding = 0)
    {
        var record = new byte[8 + content.Length + padding];
        record[0] = version;
        record[1] = type;
        BinaryPrimitives.WriteUInt16BigEndian(record.AsSpan(2), requestId);
        BinaryPrimitives.WriteUInt16BigEndian(record.AsSpan(4), (ushort)content.Length);
        record[6] = padding;
        content.CopyTo(record.AsSpan(8));
        return record;
    }

    public static byte[] Stdout(string text) => Record(6, Encoding.UTF8.GetBytes(text));

    public static byte[] Stderr(string text) => Record(7, Encoding.UTF8.GetBytes(text));

    public static byte[] EndRequest(byte protocolStatus = 0) => Record(3, [0, 0, 0, 0, protocolStatus, 0, 0, 0]);

    /// <summary>A complete, valid answer: the head, the body in records of at most 60000 bytes, end of STDOUT, end of request.</summary>
    public static async Task WriteResponseAsync(Stream stream, string head, byte[] body)
    {
        await stream.WriteAsync(Stdout(head));
        for (var at = 0; at < body.Length; at += 60000)
        {
            await stream.WriteAsync(Record(6, body.AsSpan(at, Math.Min(60000, body.Length - at))));
        }

        await stream.WriteAsync(Record(6, []));
        await stream.WriteAsync(EndRequest());
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        try
        {
            await _accepting;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
        {
        }

        Task[] open;
        lock (_connections)
        {
            open = [.. _connections];
        }

        await Task.WhenAll(open.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default)));
        _stop.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            var socket = await _listener.AcceptAsync(_stop.Token);
            Interlocked.Increment(ref _accepted);
            lock (_connections)
            {
                _connections.Add(ServeAsync(socket));
            }
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        await using var stream = new NetworkStream(socket, ownsSocket: true);
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                var request = await ReadRequestAsync(stream, _stop.Token);
                if (request is not null)
                {
                    Interlocked.Increment(ref _requests);
                }

                if (request is null || !await Behaviour(request, stream))
                {
                    return;
                }
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or EndOfStreamException)
        {
        }
    }

    private static async Task<FakeFastCgiRequest?> ReadRequestAsync(Stream stream, CancellationToken cancellationToken)
    {
        var header = new byte[8];
        var parameters = new MemoryStream();
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long bodyLength = 0;
        byte flags = 0;
        var paramsDone = false;
        while (true)
        {
            var first = await stream.ReadAsync(header, cancellationToken);
            if (first == 0)
            {
                return null;
            }

            await stream.ReadExactlyAsync(header.AsMemory(first), cancellationToken);
            if (header[0] != 1 || BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(2)) != 1)
            {
                throw new IOException("the client sent a bad record header");
            }

            var content = new byte[BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(4))];
            await stream.ReadExactlyAsync(content, cancellationToken);
            await stream.ReadExactlyAsync(new byte[header[6]], cancellationToken);
            switch (header[1])
            {
                case 1:
                    flags = content[2];
                    break;
                case 4 when content.Length == 0:
                    paramsDone = true;
                    break;
                case 4:
                    parameters.Write(content);
                    break;
                case 5 when content.Length == 0:
                    if (!paramsDone)
                    {
                        throw new IOException("STDIN ended before PARAMS");
                    }

                    var pairs = DecodePairs(parameters.ToArray());
                    return new FakeFastCgiRequest(pairs, bodyLength, Convert.ToHexStringLower(sha.GetHashAndReset()), flags);
                case 5:
                    bodyLength += content.Length;
                    sha.AppendData(content);
                    break;
                default:
                    throw new IOException($"unexpected record type {header[1]} from the client");
            }
        }
    }

    /// <summary>Name-value pairs (the specification, 3.4), decoded here rather than with the product's code.</summary>
    private static Dictionary<string, string> DecodePairs(byte[] data)
    {
        var pairs = new Dictionary<string, string>(StringComparer.Ordinal);
        var at = 0;
        int Length()
        {
            if (data[at] < 0x80)
            {
                return data[at++];
            }

            var n = BinaryPrimitives.ReadInt32BigEndian(data.AsSpan(at)) & 0x7fffffff;
            at += 4;
            return n;
        }

        while (at < data.Length)
        {
            var nameLength = Length();
            var valueLength = Length();
            pairs[Encoding.UTF8.GetString(data, at, nameLength)] = Encoding.UTF8.GetString(data, at + nameLength, valueLength);
            at += nameLength + valueLength;
        }

        return pairs;
    }
}
