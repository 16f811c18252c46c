using System.Buffers;
using System.Text;
using Dispatch.Platform.Hosting;

namespace Dispatch.Master.Children;

/// <summary>
/// Cuts the bytes of a child's stderr, fed in blocks as they arrive, into lines: UTF-8 (<see cref="ChildLogFormatter.NewDecoder"/>:
/// a sequence split between two blocks is decoded whole, invalid bytes read as U+FFFD), ended by '\n' (nothing else ends
/// a line; a CR stays in it). A line keeps at most <see cref="MaxLine"/> characters (UTF-16 code units), never the first
/// half of a surrogate pair without the second; the rest of a longer line is read and dropped and the line ends with '…'.
/// At the end of the stream a last line without '\n' is given as it is (a cut one without the '…').
/// Memory is bounded whatever the child writes: a block's characters, and the start of at most one line that has
/// not ended yet (<see cref="MaxLine"/> characters, rented only while there is one).
/// </summary>
internal sealed class BoundedLineSplitter : IDisposable
{
    public const int MaxLine = 4096;

    /// <summary>Characters decoded at once from a block.</summary>
    private const int CharBlock = 16 * 1024;

    private readonly Decoder _decoder = ChildLogFormatter.NewDecoder();
    private readonly Action<string> _line;

    /// <summary>The kept start of a line whose '\n' has not arrived yet; null when there is none.</summary>
    private char[]? _carry;
    private int _carried;

    /// <summary>The line being read had more than <see cref="MaxLine"/> characters: the rest of it is dropped.</summary>
    private bool _truncated;

    /// <param name="line">Called with each line, in order, on the thread that feeds.</param>
    public BoundedLineSplitter(Action<string> line) => _line = line;

    /// <summary>
    /// Splits the next <paramref name="bytes"/> of the stream; <paramref name="final"/> at its end (then the decoder's
    /// last incomplete sequence, if any, reads as U+FFFD, and a line without '\n' is given).
    /// </summary>
    public void Feed(ReadOnlySpan<byte> bytes, bool final)
    {
        var chars = ArrayPool<char>.Shared.Rent(CharBlock);
        try
        {
            bool completed;
            do
            {
                _decoder.Convert(bytes, chars, final, out var used, out var produced, out completed);
                Split(chars.AsSpan(0, produced));
                bytes = bytes[used..];
            }
            while (!completed || !bytes.IsEmpty);
        }
        finally
        {
            ArrayPool<char>.Shared.Return(chars);
        }

        if (final && (_carried > 0 || _truncated))
            _line(Take(ellipsis: false));
    }

    public void Dispose() => Release();

    private void Split(ReadOnlySpan<char> chars)
    {
        while (!chars.IsEmpty)
        {
            var end = chars.IndexOf('\n');
            if (end < 0)
            {
                Keep(chars);
                return;
            }

            var part = chars[..end];
            if (_carry is null && !_truncated)
            {
                // The whole line is in this block: straight from it to its string.
                var kept = Room(part, MaxLine);
                _line(kept < part.Length ? string.Concat(part[..kept], "…") : new string(part));
            }
            else
            {
                Keep(part);
                _line(Take(ellipsis: _truncated));
            }

            chars = chars[(end + 1)..];
        }
    }

    /// <summary>Adds <paramref name="part"/> of the current line to what is kept of it, up to <see cref="MaxLine"/>.</summary>
    private void Keep(ReadOnlySpan<char> part)
    {
        if (_truncated || part.IsEmpty)
            return;
        var kept = Room(part, MaxLine - _carried);
        if (kept > 0)
        {
            _carry ??= ArrayPool<char>.Shared.Rent(MaxLine);
            part[..kept].CopyTo(_carry.AsSpan(_carried));
            _carried += kept;
        }

        _truncated = kept < part.Length;
    }

    /// <summary>How many characters of <paramref name="part"/> fit in <paramref name="room"/>, a surrogate pair whole or not at all.</summary>
    private static int Room(ReadOnlySpan<char> part, int room)
    {
        if (part.Length <= room)
            return part.Length;

        // The decoder gives a pair's two halves together: a high surrogate before the cut has its low one after it.
        return room > 0 && char.IsHighSurrogate(part[room - 1]) ? room - 1 : room;
    }

    /// <summary>The kept line as a string (and '…' after it), and the splitter ready for the next line.</summary>
    private string Take(bool ellipsis)
    {
        var kept = _carry is null ? ReadOnlySpan<char>.Empty : _carry.AsSpan(0, _carried);
        var line = ellipsis ? string.Concat(kept, "…") : new string(kept);
        Release();
        _truncated = false;
        return line;
    }

    private void Release()
    {
        if (_carry is not null)
            ArrayPool<char>.Shared.Return(_carry);
        _carry = null;
        _carried = 0;
    }
}
