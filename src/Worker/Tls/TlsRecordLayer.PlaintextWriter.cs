using System.IO.Pipelines;
using Dispatch.Wire.Tls;

namespace Dispatch.Worker.Tls;

public sealed partial class TlsRecordLayer
{
    /// <summary>
    /// Kestrel's transport output: what it writes is held in buffers rented from <see cref="TlsBufferPool"/> until it
    /// flushes, then cut into records straight into the transport's buffer (small writes made before one flush share a
    /// record) and every buffer given back. No pipe and no loop of its own: an idle connection holds nothing here.
    /// </summary>
    /// <remarks>Kestrel does not write while its flush is pending, nor from two threads at once.</remarks>
    private sealed class PlaintextWriter(TlsRecordLayer layer) : PipeWriter
    {
        // A record's plaintext: a flush of up to this much rents one buffer.
        private const int SegmentSize = TlsRecordProtection.MaxPlaintext;

        private Segment[] _segments = [];
        private int _count;
        private long _buffered;
        private int _head;
        private int _headOffset;
        private int _completed;

        public override void Advance(int bytes)
        {
            if (bytes == 0)
            {
                return;
            }

            if (bytes < 0 || _count == 0 || _segments[_count - 1].Length + bytes > _segments[_count - 1].Array.Length)
            {
                throw new InvalidOperationException($"cannot advance {bytes} bytes past the memory given");
            }

            _segments[_count - 1].Length += bytes;
            _buffered += bytes;
        }

        public override Memory<byte> GetMemory(int sizeHint = 0)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _completed) != 0, this);
            ArgumentOutOfRangeException.ThrowIfNegative(sizeHint);
            var need = Math.Max(sizeHint, 1);
            if (_count == 0 || _segments[_count - 1].Array.Length - _segments[_count - 1].Length < need)
            {
                if (_count == _segments.Length)
                {
                    Array.Resize(ref _segments, Math.Max(4, _segments.Length * 2));
                }

                _segments[_count++] = new Segment(TlsBufferPool.RentArray(Math.Max(need, SegmentSize)));
            }

            ref var last = ref _segments[_count - 1];
            return last.Array.AsMemory(last.Length);
        }

        public override Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _completed) != 0, this);
            return layer.SendAsync(this, cancellationToken);
        }

        public override void CancelPendingFlush() => layer._transport.Output.CancelPendingFlush();

        public override void Complete(Exception? exception = null)
        {
            if (Interlocked.Exchange(ref _completed, 1) == 0)
            {
                layer._writeLoop = layer.CloseAsync(this, exception);
            }
        }

        /// <summary>What was written since the last flush, as records into the transport's buffer; every buffer given back. Under the lock.</summary>
        public void WriteRecords()
        {
            try
            {
                layer.WriteRecords(this, _buffered);
            }
            finally
            {
                Discard();
            }
        }

        /// <summary>Copies the next <paramref name="destination"/>.Length bytes written (there are that many) into it.</summary>
        public void Take(Span<byte> destination)
        {
            while (!destination.IsEmpty)
            {
                ref var segment = ref _segments[_head];
                var n = Math.Min(segment.Length - _headOffset, destination.Length);
                segment.Array.AsSpan(_headOffset, n).CopyTo(destination);
                destination = destination[n..];
                Consume(n);
            }
        }

        /// <summary>
        /// Takes the next <paramref name="length"/> bytes written (there are that many) where they lie, when they lie in
        /// one buffer with <paramref name="room"/> bytes of it after them (written or not: a caller that writes there
        /// puts them back): <paramref name="source"/> is those bytes and the room. Otherwise takes nothing.
        /// </summary>
        public bool TryTakeContiguous(int length, int room, out Span<byte> source)
        {
            ref var segment = ref _segments[_head];
            if (segment.Length - _headOffset < length || segment.Array.Length - _headOffset < length + room)
            {
                source = default;
                return false;
            }

            source = segment.Array.AsSpan(_headOffset, length + room);
            Consume(length);
            return true;
        }

        // Moves past n bytes of the head buffer (at most what it holds past _headOffset), on to the next buffer at its end.
        private void Consume(int n)
        {
            _headOffset += n;
            _buffered -= n;
            if (_headOffset == _segments[_head].Length && _head < _count - 1)
            {
                _head++;
                _headOffset = 0;
            }
        }

        /// <summary>Forgets what was written and gives every buffer back.</summary>
        public void Discard()
        {
            for (var i = 0; i < _count; i++)
            {
                TlsBufferPool.ReturnArray(_segments[i].Array);
                _segments[i] = default;
            }

            _count = 0;
            _head = 0;
            _headOffset = 0;
            _buffered = 0;
        }

        private struct Segment(byte[] array)
        {
            public readonly byte[] Array = array;
            public int Length;
        }
    }
}
