using System.Collections.Concurrent;

namespace Dispatch.TlsDispatcher.Tests.Tls;

/// <summary>An in-memory duplex pipe: a Stream for the client side and a raw endpoint for a socket-less server.</summary>
public static class MemoryDuplex
{
    public static (Stream Client, Endpoint Server) Create()
    {
        var toServer = new BlockingCollection<byte[]>();
        var toClient = new BlockingCollection<byte[]>();
        return (new ClientStream(toServer, toClient), new Endpoint(toClient, toServer));
    }

    public sealed class Endpoint
    {
        private readonly BlockingCollection<byte[]> _outgoing;
        private readonly BlockingCollection<byte[]> _incoming;

        internal Endpoint(BlockingCollection<byte[]> outgoing, BlockingCollection<byte[]> incoming)
        {
            _outgoing = outgoing;
            _incoming = incoming;
        }

        public void Write(ReadOnlySpan<byte> data)
        {
            if (!data.IsEmpty)
                _outgoing.Add(data.ToArray());
        }

        public int Read(byte[] buffer, TimeSpan timeout)
        {
            if (!_incoming.TryTake(out byte[]? chunk, timeout))
                return 0;
            if (chunk.Length > buffer.Length)
                throw new InvalidOperationException("chunk larger than the buffer");
            chunk.CopyTo(buffer, 0);
            return chunk.Length;
        }
    }

    private sealed class ClientStream : Stream
    {
        private readonly BlockingCollection<byte[]> _outgoing;
        private readonly BlockingCollection<byte[]> _incoming;
        private byte[] _pending = [];
        private int _pendingOffset;

        public ClientStream(BlockingCollection<byte[]> outgoing, BlockingCollection<byte[]> incoming)
        {
            _outgoing = outgoing;
            _incoming = incoming;
        }

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count)
        {
            if (_pendingOffset == _pending.Length)
            {
                if (!_incoming.TryTake(out byte[]? chunk, TimeSpan.FromSeconds(10)))
                    return 0;
                _pending = chunk;
                _pendingOffset = 0;
            }

            int n = Math.Min(count, _pending.Length - _pendingOffset);
            Array.Copy(_pending, _pendingOffset, buffer, offset, n);
            _pendingOffset += n;
            return n;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
            => Task.Run(() => Read(buffer, offset, count), cancellationToken);

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            byte[] temp = new byte[buffer.Length];
            return new ValueTask<int>(Task.Run(
                () =>
                {
                    int n = Read(temp, 0, temp.Length);
                    temp.AsSpan(0, n).CopyTo(buffer.Span);
                    return n;
                },
                cancellationToken));
        }

        public override void Write(byte[] buffer, int offset, int count) => _outgoing.Add(buffer.AsSpan(offset, count).ToArray());

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        {
            Write(buffer, offset, count);
            return Task.CompletedTask;
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            _outgoing.Add(buffer.ToArray(), CancellationToken.None);
            return ValueTask.CompletedTask;
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
