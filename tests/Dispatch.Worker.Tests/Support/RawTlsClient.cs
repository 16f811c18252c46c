using System.Net.Sockets;
using System.Text;
using Dispatch.Wire.Tls;

namespace Dispatch.Worker.Tests.Support;

/// <summary>
/// The client's side of a handed session spoken record by record with <see cref="TlsRecordProtection"/>: for what a
/// well-behaved TLS library will not send (flipped bits, oversized records, KeyUpdate on demand, stray handshakes).
/// </summary>
internal sealed class RawTlsClient : IDisposable
{
    private readonly Socket _socket;
    private readonly List<byte> _received = [];
    private readonly List<byte> _plaintext = [];
    private readonly byte[] _chunk = new byte[65536];

    public RawTlsClient(Socket socket, TlsSessionState keys)
    {
        _socket = socket;
        Writer = TlsRecordProtection.Create(keys.Version, keys.CipherSuite, keys.ClientSecret, keys.ClientIv, keys.ReadSequence);
        Reader = TlsRecordProtection.Create(keys.Version, keys.CipherSuite, keys.ServerSecret, keys.ServerIv, keys.WriteSequence);
    }

    /// <summary>The client's write protection (the worker's read side).</summary>
    public TlsRecordProtection Writer { get; }

    /// <summary>The client's read protection (the worker's write side).</summary>
    public TlsRecordProtection Reader { get; }

    /// <summary>Every record received so far: content type and plaintext.</summary>
    public List<(TlsContentType Type, byte[] Plaintext)> Records { get; } = [];

    public byte[] Seal(TlsContentType type, ReadOnlySpan<byte> plaintext)
    {
        var record = new byte[Writer.RecordLength(plaintext.Length)];
        Writer.Encrypt(type, plaintext, record);
        return record;
    }

    public Task SendRecordAsync(TlsContentType type, ReadOnlySpan<byte> plaintext) => SendAsync(Seal(type, plaintext));

    public Task SendTextAsync(string text) => SendRecordAsync(TlsContentType.ApplicationData, Encoding.ASCII.GetBytes(text));

    public async Task SendAsync(byte[] bytes)
    {
        var sent = 0;
        while (sent < bytes.Length)
        {
            sent += await _socket.SendAsync(bytes.AsMemory(sent), SocketFlags.None);
        }
    }

    /// <summary>The next record, opened; <see langword="null"/> at the end of the stream (between records).</summary>
    public async Task<(TlsContentType Type, byte[] Plaintext)?> ReceiveRecordAsync(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            if (_received.Count >= 5)
            {
                var total = 5 + ((_received[3] << 8) | _received[4]);
                if (_received.Count >= total)
                {
                    var record = _received.GetRange(0, total).ToArray();
                    _received.RemoveRange(0, total);
                    var type = Reader.Decrypt(record, out var range);
                    var opened = (type, record[range]);
                    Records.Add(opened);
                    return opened;
                }
            }

            var n = await _socket.ReceiveAsync(_chunk, SocketFlags.None, cancellationToken);
            if (n == 0)
            {
                if (_received.Count != 0)
                {
                    throw new IOException($"the stream ended inside a record ({_received.Count} bytes)");
                }

                return null;
            }

            _received.AddRange(_chunk.AsSpan(0, n));
        }
    }

    /// <summary>Reads records until one is an alert, then expects the end of the stream; returns the alert (level, description).</summary>
    public async Task<(byte Level, TlsAlertDescription Description)> ReceiveAlertThenEndAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        while (true)
        {
            var record = await ReceiveRecordAsync(timeout.Token) ?? throw new IOException("the stream ended without an alert");
            if (record.Type == TlsContentType.Alert)
            {
                Assert.Equal(2, record.Plaintext.Length);
                Assert.Null(await ReceiveRecordAsync(timeout.Token));
                return (record.Plaintext[0], (TlsAlertDescription)record.Plaintext[1]);
            }
        }
    }

    /// <summary>Reads one HTTP/1.1 response (with a Content-Length) from application-data records.</summary>
    public async Task<RawResponse> ReceiveResponseAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        while (true)
        {
            if (HttpResponseParser.TryParse(_plaintext, out var response))
            {
                return response;
            }

            var record = await ReceiveRecordAsync(timeout.Token) ?? throw new IOException("the stream ended inside a response");
            switch (record.Type)
            {
                case TlsContentType.ApplicationData:
                    _plaintext.AddRange(record.Plaintext);
                    break;
                case TlsContentType.Handshake when record.Plaintext is [24, 0, 0, 1, _]:
                    Reader.UpdateKey();
                    break;
                default:
                    throw new IOException($"unexpected {record.Type} record inside a response");
            }
        }
    }

    public void ShutdownSend() => _socket.Shutdown(SocketShutdown.Send);

    public void Dispose()
    {
        Writer.Dispose();
        Reader.Dispose();
        _socket.Dispose();
    }
}
