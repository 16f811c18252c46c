using System.Net.Sockets;
using Dispatch.Wire.Payloads;
using Dispatch.Worker.Http;

namespace Dispatch.Worker.FastCgi;

/// <summary>
/// One connection to a FastCGI application over a Unix socket, carrying one request at a time (request id 1) and kept
/// open between requests (FCGI_KEEP_CONN). Reading and writing may run at once (the request body is sent while the
/// answer is read); two reads or two writes may not.
/// </summary>
internal sealed class FastCgiConnection : IDisposable
{
    private readonly NetworkStream _stream;
    private readonly byte[] _readHeader = new byte[FastCgiRecord.HeaderSize];
    private readonly byte[] _writeHeader = new byte[FastCgiRecord.HeaderSize];
    private readonly byte[] _padding = new byte[FastCgiRecord.MaxPaddingLength];

    // Bytes read from the application and not parsed yet: one read usually holds a whole small answer (several records).
    private readonly byte[] _in = new byte[16 * 1024];
    private int _inStart;
    private int _inEnd;

    private FastCgiConnection(NetworkStream stream)
    {
        _stream = stream;
    }

    /// <summary>Whether this connection served an earlier request (it may have been closed by the application since).</summary>
    public bool Reused { get; set; }

    /// <summary>Connects within <paramref name="timeout"/>; failures are <see cref="UpstreamConnectException"/>, as for the proxy.</summary>
    public static async Task<FastCgiConnection> ConnectAsync(ProxyUpstream upstream, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var stream = (NetworkStream)await ProxyHandler.ConnectAsync(upstream, timeout, cancellationToken).ConfigureAwait(false);
        return new FastCgiConnection(stream);
    }

    /// <summary>
    /// An idle connection is usable when nothing is waiting on it: readable means the application closed it (end of
    /// file) or sent something unasked — either way it is dropped.
    /// </summary>
    public bool LooksIdle()
    {
        if (_inStart != _inEnd)
        {
            return false; // bytes after FCGI_END_REQUEST
        }

        try
        {
            var socket = _stream.Socket;
            return socket.Connected && !socket.Poll(0, SelectMode.SelectRead) && !socket.Poll(0, SelectMode.SelectError);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>FCGI_BEGIN_REQUEST (responder, keep the connection), the parameters, and the empty PARAMS record, in one write.</summary>
    public async ValueTask SendHeadAsync(FastCgiParams parameters, CancellationToken cancellationToken)
    {
        var pairs = parameters.Encoded;
        var records = (pairs.Length + FastCgiRecord.MaxContentLength - 1) / FastCgiRecord.MaxContentLength;
        var buffer = new byte[(FastCgiRecord.HeaderSize * 2) + 8 + (records * FastCgiRecord.HeaderSize) + pairs.Length];
        var span = buffer.AsSpan();
        FastCgiRecord.WriteHeader(span, FastCgiRecordType.BeginRequest, 8);
        span[8] = 0;
        span[9] = (byte)FastCgiRecord.RoleResponder;
        span[10] = FastCgiRecord.FlagKeepConnection;
        span[11..16].Clear();
        var at = 16;
        var remaining = pairs.Span;
        while (!remaining.IsEmpty)
        {
            var take = Math.Min(remaining.Length, FastCgiRecord.MaxContentLength);
            FastCgiRecord.WriteHeader(span[at..], FastCgiRecordType.Params, take);
            remaining[..take].CopyTo(span[(at + FastCgiRecord.HeaderSize)..]);
            at += FastCgiRecord.HeaderSize + take;
            remaining = remaining[take..];
        }

        FastCgiRecord.WriteHeader(span[at..], FastCgiRecordType.Params, 0);
        at += FastCgiRecord.HeaderSize;
        await _stream.WriteAsync(buffer.AsMemory(0, at), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Request body bytes as STDIN records (an empty <paramref name="data"/> sends nothing).</summary>
    public async ValueTask SendStdinAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        while (!data.IsEmpty)
        {
            var take = Math.Min(data.Length, FastCgiRecord.MaxContentLength);
            FastCgiRecord.WriteHeader(_writeHeader, FastCgiRecordType.Stdin, take);
            await _stream.WriteAsync(_writeHeader, cancellationToken).ConfigureAwait(false);
            await _stream.WriteAsync(data[..take], cancellationToken).ConfigureAwait(false);
            data = data[take..];
        }
    }

    /// <summary>The empty STDIN record: the request body is complete.</summary>
    public ValueTask SendEndOfStdinAsync(CancellationToken cancellationToken)
    {
        FastCgiRecord.WriteHeader(_writeHeader, FastCgiRecordType.Stdin, 0);
        return _stream.WriteAsync(_writeHeader, cancellationToken);
    }

    /// <summary>
    /// Reads one record into <paramref name="content"/> (at least 65535 bytes), checked by
    /// <see cref="FastCgiRecord.ParseHeader"/>; its padding is skipped. Returns null at a clean end of file between
    /// records; end of file inside a record is a <see cref="FastCgiProtocolException"/>.
    /// </summary>
    public async ValueTask<(FastCgiRecordType Type, int Length)?> ReadRecordAsync(Memory<byte> content, CancellationToken cancellationToken)
    {
        if (content.Length < FastCgiRecord.MaxContentLength)
        {
            throw new ArgumentException("The content buffer must hold 65535 bytes.", nameof(content));
        }

        if (_inStart == _inEnd)
        {
            _inStart = 0;
            _inEnd = await _stream.ReadAsync(_in, cancellationToken).ConfigureAwait(false);
            if (_inEnd == 0)
            {
                return null;
            }
        }

        await ReadExactlyAsync(_readHeader, "a record header", cancellationToken).ConfigureAwait(false);
        var (type, length, padding) = FastCgiRecord.ParseHeader(_readHeader);
        await ReadExactlyAsync(content[..length], "a record's content", cancellationToken).ConfigureAwait(false);
        await ReadExactlyAsync(_padding.AsMemory(0, padding), "a record's padding", cancellationToken).ConfigureAwait(false);
        return (type, length);
    }

    public void Dispose() => _stream.Dispose();

    /// <summary>Fills <paramref name="buffer"/> from what is buffered, then from the socket (large reads go straight in).</summary>
    private async ValueTask ReadExactlyAsync(Memory<byte> buffer, string what, CancellationToken cancellationToken)
    {
        while (!buffer.IsEmpty)
        {
            if (_inStart < _inEnd)
            {
                var take = Math.Min(buffer.Length, _inEnd - _inStart);
                _in.AsMemory(_inStart, take).CopyTo(buffer);
                _inStart += take;
                buffer = buffer[take..];
                continue;
            }

            int n;
            if (buffer.Length >= _in.Length)
            {
                n = await _stream.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
                buffer = buffer[n..];
            }
            else
            {
                _inStart = 0;
                _inEnd = n = await _stream.ReadAsync(_in, cancellationToken).ConfigureAwait(false);
            }

            if (n == 0)
            {
                throw new FastCgiProtocolException($"the connection closed inside {what}");
            }
        }
    }
}
