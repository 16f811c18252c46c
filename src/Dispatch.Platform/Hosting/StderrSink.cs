using System.Globalization;
using System.Text;
using Dispatch.Platform.Interop;
using Serilog.Core;
using Serilog.Events;
using Serilog.Formatting;

namespace Dispatch.Platform.Hosting;

/// <summary>
/// A child's log sink: each event formatted and written to its stderr (a socket the master reads) with write(2), whole,
/// under a lock. It opens nothing: .NET's <see cref="Console"/> (and so Serilog's console sink) duplicates stdout and
/// stderr on first use and, on its first write, sets up terminal and signal handling with a pipe of its own: four
/// descriptors that a dispatcher logging at Warning opened in the middle of a flood and kept (docs/floods.md, "The
/// descriptors after a flood").
/// </summary>
public sealed class StderrSink : ILogEventSink
{
    /// <summary>A formatted event kept as text up to this size; a larger one is written, and its buffer let go.</summary>
    private const int KeepChars = 16 * 1024;

    private readonly ITextFormatter _formatter;
    private readonly int _fd;
    private readonly Lock _gate = new();
    private StringBuilder _text = new();
    private byte[] _bytes = new byte[4096];

    /// <param name="formatter">How an event becomes its line(s).</param>
    /// <param name="fd">The descriptor written to: stderr (2), or another in tests.</param>
    public StderrSink(ITextFormatter formatter, int fd = 2)
    {
        ArgumentNullException.ThrowIfNull(formatter);
        _formatter = formatter;
        _fd = fd;
    }

    public void Emit(LogEvent logEvent)
    {
        ArgumentNullException.ThrowIfNull(logEvent);
        lock (_gate)
        {
            var text = _text.Clear();
            using (var writer = new StringWriter(text, CultureInfo.InvariantCulture))
                _formatter.Format(logEvent, writer);
            var length = Encoding.UTF8.GetMaxByteCount(text.Length);
            if (_bytes.Length < length)
                _bytes = new byte[Math.Max(length, _bytes.Length * 2)];
            var count = 0;
            foreach (var chunk in text.GetChunks())
                count += Encoding.UTF8.GetBytes(chunk.Span, _bytes.AsSpan(count));
            WriteAll(_bytes.AsSpan(0, count));
            if (text.Capacity > KeepChars)
            {
                _text = new StringBuilder();
                _bytes = new byte[4096];
            }
        }
    }

    // The whole line or nothing more: a write interrupted by a signal is retried, a non-blocking descriptor that is full
    // is waited for, and any other failure (the master is gone: EPIPE) drops the rest, as the console sink did.
    private unsafe void WriteAll(ReadOnlySpan<byte> bytes)
    {
        fixed (byte* start = bytes)
        {
            var done = 0;
            while (done < bytes.Length)
            {
                var n = Libc.Write(_fd, start + done, (nuint)(bytes.Length - done));
                if (n > 0)
                {
                    done += (int)n;
                    continue;
                }

                var errno = n < 0 ? Libc.LastError : 0;
                if (errno == Libc.EINTR)
                    continue;
                if (errno != Libc.EAGAIN)
                    return;
                var poll = new Dispatch.Wire.Interop.WireLibc.PollFd { Fd = _fd, Events = Libc.POLLOUT };
                Libc.Poll(&poll, 1, 1000);
            }
        }
    }
}
