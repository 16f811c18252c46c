using System.Buffers;
using System.IO.Pipelines;

namespace Dispatch.Worker.Http;

/// <summary>
/// A <see cref="PipeReader"/> that first yields a prefix (the bytes the dispatcher already read from the socket) and
/// then the data of an inner reader (the socket), as one continuous stream.
/// </summary>
/// <remarks>
/// <para>While the prefix is not fully consumed, a read returns either the remaining prefix alone (no await, as long as
/// the consumer has not examined all of it) or the remaining prefix followed by the inner reader's buffer, as one
/// multi-segment <see cref="ReadOnlySequence{T}"/> whose segments wrap (not copy) the inner buffer's memory.
/// <see cref="AdvanceTo(SequencePosition, SequencePosition)"/> maps the consumer's positions back: a position in the
/// prefix slices the prefix, a position in the inner part is translated into the inner buffer's own position, so the
/// inner reader sees correct consumed/examined positions (examining everything makes the next read wait for new
/// socket data, exactly as with a plain pipe). Once the prefix is consumed every call is forwarded unchanged.</para>
/// <para>Like any <see cref="PipeReader"/> it has a single consumer; only <see cref="CancelPendingRead"/> may be called
/// from another thread.</para>
/// </remarks>
internal sealed class PrefixedPipeReader : PipeReader
{
    private readonly PipeReader _inner;
    private readonly Lock _sync = new();

    private ReadOnlyMemory<byte> _prefix;
    private volatile bool _passThrough;

    // The consumer examined everything the last prefix-only read returned: further reads must include inner data.
    private bool _needInner;

    // What the last read returned (until the matching AdvanceTo).
    private ReadState _state;
    private int _returnedPrefixLength;
    private ReadOnlySequence<byte> _innerBuffer;

    // Guarded by _sync.
    private bool _innerReadInFlight;
    private bool _cancelRequested;

    public PrefixedPipeReader(ReadOnlyMemory<byte> prefix, PipeReader inner)
    {
        ArgumentNullException.ThrowIfNull(inner);
        _inner = inner;
        _prefix = prefix;
        _passThrough = prefix.IsEmpty;
    }

    private enum ReadState
    {
        None,
        PrefixOnly,
        Combined,
    }

    /// <summary>Bytes of the prefix not yet consumed.</summary>
    public int RemainingPrefixLength => _prefix.Length;

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        if (_passThrough)
        {
            return _inner.ReadAsync(cancellationToken);
        }

        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<ReadResult>(cancellationToken);
        }

        return _needInner ? ReadCombinedAsync(cancellationToken) : new ValueTask<ReadResult>(ReadPrefixOnly());
    }

    public override bool TryRead(out ReadResult result)
    {
        if (_passThrough)
        {
            return _inner.TryRead(out result);
        }

        if (!_needInner)
        {
            result = ReadPrefixOnly();
            return true;
        }

        lock (_sync)
        {
            if (_cancelRequested)
            {
                _cancelRequested = false;
                _inner.CancelPendingRead();
            }
        }

        if (_inner.TryRead(out var innerResult))
        {
            result = HoldCombined(innerResult);
            return true;
        }

        result = default;
        return false;
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        if (_passThrough)
        {
            _inner.AdvanceTo(consumed, examined);
            return;
        }

        switch (_state)
        {
            case ReadState.PrefixOnly:
                {
                    var consumedInPrefix = PrefixOffset(consumed);
                    var examinedInPrefix = PrefixOffset(examined);
                    if (consumedInPrefix < 0 || examinedInPrefix < 0)
                    {
                        throw new InvalidOperationException("The position does not belong to the last buffer read.");
                    }

                    _state = ReadState.None;
                    _needInner = examinedInPrefix >= _returnedPrefixLength;
                    _prefix = _prefix[consumedInPrefix..];
                    break;
                }

            case ReadState.Combined:
                {
                    var (consumedInPrefix, innerConsumed) = MapCombined(consumed);
                    var (examinedInPrefix, innerExamined) = MapCombined(examined);
                    _state = ReadState.None;

                    // Examined stopped inside the prefix: the next read can answer from the prefix without waiting.
                    _needInner = examinedInPrefix < 0 || examinedInPrefix >= _returnedPrefixLength;
                    _innerBuffer = default;
                    _prefix = consumedInPrefix < 0 ? default : _prefix[consumedInPrefix..];
                    _inner.AdvanceTo(innerConsumed, innerExamined);
                    break;
                }

            default:
                throw new InvalidOperationException("AdvanceTo called without a preceding read.");
        }

        if (_prefix.IsEmpty)
        {
            SwitchToPassThrough();
        }
    }

    public override void CancelPendingRead()
    {
        if (_passThrough)
        {
            _inner.CancelPendingRead();
            return;
        }

        lock (_sync)
        {
            if (_passThrough || _innerReadInFlight)
            {
                _inner.CancelPendingRead();
            }
            else
            {
                _cancelRequested = true;
            }
        }
    }

    public override void Complete(Exception? exception = null)
    {
        _prefix = default;
        _innerBuffer = default;
        _inner.Complete(exception);
    }

    public override ValueTask CompleteAsync(Exception? exception = null)
    {
        _prefix = default;
        _innerBuffer = default;
        return _inner.CompleteAsync(exception);
    }

    private ReadResult ReadPrefixOnly()
    {
        bool canceled;
        lock (_sync)
        {
            canceled = _cancelRequested;
            _cancelRequested = false;
        }

        var segment = new Segment(_prefix, 0, isPrefix: true, innerStart: default);
        _state = ReadState.PrefixOnly;
        _returnedPrefixLength = _prefix.Length;
        return new ReadResult(new ReadOnlySequence<byte>(segment, 0, segment, segment.Memory.Length), canceled, isCompleted: false);
    }

    private async ValueTask<ReadResult> ReadCombinedAsync(CancellationToken cancellationToken)
    {
        lock (_sync)
        {
            if (_cancelRequested)
            {
                _cancelRequested = false;
                _inner.CancelPendingRead();
            }

            _innerReadInFlight = true;
        }

        ReadResult innerResult;
        try
        {
            innerResult = await _inner.ReadAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            lock (_sync)
            {
                _innerReadInFlight = false;
            }
        }

        return HoldCombined(innerResult);
    }

    private ReadResult HoldCombined(ReadResult innerResult)
    {
        var innerBuffer = innerResult.Buffer;
        var first = new Segment(_prefix, 0, isPrefix: true, innerStart: default);
        var last = first;
        long runningIndex = _prefix.Length;
        var position = innerBuffer.Start;
        var segmentStart = position;
        while (innerBuffer.TryGet(ref position, out var memory))
        {
            if (!memory.IsEmpty)
            {
                var next = new Segment(memory, runningIndex, isPrefix: false, innerStart: segmentStart);
                last.SetNext(next);
                last = next;
                runningIndex += memory.Length;
            }

            segmentStart = position;
        }

        _innerBuffer = innerBuffer;
        _state = ReadState.Combined;
        _returnedPrefixLength = _prefix.Length;
        var combined = new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
        return new ReadResult(combined, innerResult.IsCanceled, innerResult.IsCompleted);
    }

    /// <summary>Offset into the prefix of a position from a prefix-only read, or -1.</summary>
    private static int PrefixOffset(SequencePosition position) =>
        position.GetObject() is Segment { IsPrefix: true } ? position.GetInteger() : -1;

    /// <summary>
    /// Maps a position of a combined read: (offset in prefix, inner start) when it lies in the prefix,
    /// (-1, inner position) when it lies in the inner part.
    /// </summary>
    private (int PrefixOffset, SequencePosition Inner) MapCombined(SequencePosition position)
    {
        if (position.GetObject() is not Segment segment)
        {
            throw new InvalidOperationException("The position does not belong to the last buffer read.");
        }

        var index = position.GetInteger();
        if (segment.IsPrefix)
        {
            // The end of the prefix segment is the same place as the start of the inner data.
            return (index, _innerBuffer.Start);
        }

        return (-1, _innerBuffer.GetPosition(index, segment.InnerStart));
    }

    private void SwitchToPassThrough()
    {
        lock (_sync)
        {
            _prefix = default;
            _passThrough = true;
            if (_cancelRequested)
            {
                _cancelRequested = false;
                _inner.CancelPendingRead();
            }
        }
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex, bool isPrefix, SequencePosition innerStart)
        {
            Memory = memory;
            RunningIndex = runningIndex;
            IsPrefix = isPrefix;
            InnerStart = innerStart;
        }

        public bool IsPrefix { get; }

        /// <summary>Position in the inner buffer of this segment's first byte.</summary>
        public SequencePosition InnerStart { get; }

        public void SetNext(Segment next) => Next = next;
    }
}
