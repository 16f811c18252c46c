using System.Runtime.InteropServices;
using System.Text;
using Dispatch.Master.Children;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Serilog;
using Serilog.Core;
using Serilog.Events;

namespace Dispatch.Master.Tests.Children;

/// <summary>
/// The master's reader of a child's stderr, through a real stream socketpair as the master has it: bytes written by the
/// "child" end in the writes given, each read by the pump before the next is written (so a line can be split between
/// two reads exactly where a test says), the end closed, the pump run to its end, the events it logged checked.
/// </summary>
public partial class StderrPumpTests
{
    private const int MaxLine = BoundedLineSplitter.MaxLine;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Lines_split_between_two_reads_at_every_byte_are_relogged_whole()
    {
        // Multi-byte characters (2, 3 and 4 bytes), invalid bytes, properties after the separator, and a second line.
        var bytes = Concat("INF h\u00e9llo \u20ac \U0001D11E "u8, [0xE2, 0x82], " "u8, [0xFF], " w\u00f6rld\u001f{\"Vhost\":\"a.localhost\",\"Pid\":1}\nWRN second\n"u8);
        for (var split = 1; split < bytes.Length; split++)
        {
            var events = await Pumped(bytes[..split], bytes[split..]);
            Assert.Equal(2, events.Count);
            Assert.Equal((LogEventLevel.Information, "h\u00e9llo \u20ac \U0001D11E \uFFFD \uFFFD w\u00f6rld"), (events[0].Level, Line(events[0])));
            Assert.Equal("a.localhost", Property(events[0], "Vhost"));
            Assert.Equal(4242, Property(events[0], "Pid")); // the master's, never the child's
            Assert.Equal((LogEventLevel.Warning, "second"), (events[1].Level, Line(events[1])));
        }
    }

    /// <summary>
    /// The master's log file in text (Serilog's own formatter, the template of Program's <c>log.file</c>) writes a child's
    /// line as the console does, <c>Worker 4242 (pool a): ...</c>: an enum property was quoted there (<c>"Worker"</c>), so
    /// a grep written against one output missed the other.
    /// </summary>
    [Fact]
    public async Task A_relogged_line_names_the_child_the_same_way_in_the_log_files_text_as_on_the_console()
    {
        var events = await Pumped("INF serving a.localhost\n"u8.ToArray());
        var formatter = new Serilog.Formatting.Display.MessageTemplateTextFormatter("{Message:lj}", System.Globalization.CultureInfo.InvariantCulture);
        using var text = new StringWriter();
        formatter.Format(Assert.Single(events), text);
        Assert.Equal("Worker 4242 (pool a): serving a.localhost", text.ToString());
    }

    [Fact]
    public async Task Many_lines_in_one_read_and_one_line_in_many_reads_are_the_same_lines()
    {
        var text = string.Concat(Enumerable.Range(0, 200).Select(i => $"INF line {i} \u20ac\n"));
        var bytes = Encoding.UTF8.GetBytes(text);
        var expected = Enumerable.Range(0, 200).Select(i => $"line {i} \u20ac").ToList();
        Assert.Equal(expected, (await Pumped(bytes)).Select(Line));
        Assert.Equal(expected, (await Pumped(Chunks(bytes, 7))).Select(Line));
        Assert.Equal(expected, (await Pumped(Chunks(bytes, 1))).Select(Line));
    }

    [Theory]
    [InlineData(MaxLine - 1)]
    [InlineData(MaxLine)]
    [InlineData(MaxLine + 1)]
    [InlineData(MaxLine * 3)]
    [InlineData(1 << 20)]
    public async Task A_line_keeps_at_most_the_maximum_and_the_rest_is_dropped_with_an_ellipsis(int length)
    {
        var bytes = Concat(Encoding.ASCII.GetBytes(Pattern(length)), "\nnext\n"u8);
        var expected = length <= MaxLine ? Pattern(length) : Pattern(MaxLine) + "\u2026";
        foreach (var writes in new byte[][][] { [bytes], Chunks(bytes, 1000), Chunks(bytes, MaxLine), Chunks(bytes, MaxLine + 1) })
        {
            var events = await Pumped(writes);
            Assert.Equal<string>([expected, "next"], events.Select(Line));
        }
    }

    [Fact]
    public async Task A_cut_never_keeps_half_a_surrogate_pair_and_the_pump_reads_on()
    {
        // The cut falls between the two UTF-16 halves of U+1D11E, inside the JSON after the separator. It kept the high
        // half alone, which JsonDocument.Parse refused with an ArgumentException (not a JsonException): the pump ended,
        // and the child's stderr was no longer read (the child blocks once the socket's buffer is full).
        var prefix = "INF x\u001f{\"Vhost\":\"";
        var padding = new string('a', MaxLine - 1 - prefix.Length);
        var bytes = Encoding.UTF8.GetBytes(prefix + padding + "\U0001D11E\"}\nINF after\n");
        foreach (var writes in new byte[][][] { [bytes], Chunks(bytes, 1), Chunks(bytes, MaxLine - 2) })
        {
            var events = await Pumped(writes);
            Assert.Equal(2, events.Count);
            Assert.Equal("x {\"Vhost\":\"" + padding + "\u2026", Line(events[0]));
            Assert.Equal("after", Line(events[1]));
        }

        // A pair that fits whole is kept.
        var fits = Encoding.UTF8.GetBytes(new string('a', MaxLine - 2) + "\U0001D11Eb\n");
        Assert.Equal(new string('a', MaxLine - 2) + "\U0001D11E\u2026", Line(Assert.Single(await Pumped(fits))));
    }

    [Fact]
    public async Task A_line_whose_properties_the_JSON_reader_throws_on_is_relogged_as_text_and_the_pump_reads_on()
    {
        // Escaped lone surrogates after the separator, in a value and in a name: JsonElement.GetString and .Name threw
        // an InvalidOperationException, which ChildLogFormatter.Split did not catch (only JsonException): the pump
        // ended, and the child's stderr was no longer read (issue 13).
        var bytes = "INF x\u001f{\"Vhost\":\"\\ud800\"}\nWRN y\u001f{\"\\udc00\":1,\"Pool\":\"a\"}\nINF after\u001f{\"Vhost\":\"b.localhost\"}\n"u8.ToArray();
        foreach (var writes in new byte[][][] { [bytes], Chunks(bytes, 7) })
        {
            var events = await Pumped(writes);
            Assert.Equal(3, events.Count);
            Assert.Equal((LogEventLevel.Information, "x {\"Vhost\":\"\\ud800\"}"), (events[0].Level, Line(events[0])));
            Assert.Null(Property(events[0], "Vhost"));
            Assert.Equal((LogEventLevel.Warning, "y {\"\\udc00\":1,\"Pool\":\"a\"}"), (events[1].Level, Line(events[1])));
            Assert.Null(Property(events[1], "Pool"));
            Assert.Equal("after", Line(events[2]));
            Assert.Equal("b.localhost", Property(events[2], "Vhost"));
        }
    }

    [Fact]
    public async Task A_last_line_without_a_line_break_is_relogged_at_the_end_of_the_stream()
    {
        Assert.Empty(await Pumped());
        Assert.Equal<string>([""], (await Pumped("\n"u8.ToArray())).Select(Line));
        Assert.Equal<string>(["one", "two"], (await Pumped("INF one\nINF two"u8.ToArray())).Select(Line));
        Assert.Equal<string>(["one", "two"], (await Pumped("INF one\nINF t"u8.ToArray(), "wo"u8.ToArray())).Select(Line));
        Assert.Equal<string>(["one"], (await Pumped("INF one\n"u8.ToArray())).Select(Line));

        // Cut at the end of the stream: the kept part, without the ellipsis a line break would have added.
        Assert.Equal<string>([Pattern(MaxLine)], (await Pumped(Encoding.ASCII.GetBytes(Pattern(MaxLine + 10)))).Select(Line));
    }

    [Theory]
    [InlineData(new byte[] { (byte)'a', 0xFF, (byte)'b', (byte)'\n' }, "a\uFFFDb")]
    [InlineData(new byte[] { 0xC3, 0x28, (byte)'\n' }, "\uFFFD(")]
    [InlineData(new byte[] { 0xE2, 0x82, (byte)'\n', (byte)'x' }, "\uFFFD", "x")]
    [InlineData(new byte[] { 0xC0, 0x80, 0xED, 0xA0, 0x80, (byte)'\n' }, "\uFFFD\uFFFD\uFFFD\uFFFD\uFFFD")]
    [InlineData(new byte[] { (byte)'x', 0xF0, 0x9D, 0x84 }, "x\uFFFD")] // an incomplete sequence at the end of the stream
    [InlineData(new byte[] { 0xF0, 0x9D, 0x84, 0x9E, (byte)'\n' }, "\U0001D11E")]
    public async Task Invalid_UTF8_reads_as_replacement_characters_wherever_the_reads_split_it(byte[] bytes, params string[] lines)
    {
        Assert.Equal(lines, (await Pumped(bytes)).Select(Line));
        Assert.Equal(lines, (await Pumped(Chunks(bytes, 1))).Select(Line));
    }

    // Found by fuzzing (target childstderr): the master's reader was new StreamReader(stream, Encoding.UTF8), which
    // honours a byte-order mark, so a child that wrote FF FE had the rest of its stderr read as UTF-16 (ten lines
    // became one event; FF FE alone, no event at all). The NULs are control characters: spaces in the master's log.
    [Theory]
    [InlineData(new byte[] { 0xFF, 0xFE, (byte)'a', 0, (byte)'\n', 0, (byte)'b', 0 }, new[] { "\uFFFD\uFFFDa ", " b " })]
    [InlineData(new byte[] { 0xFE, 0xFF, 0, (byte)'a', 0, (byte)'\n' }, new[] { "\uFFFD\uFFFD a " })]
    [InlineData(new byte[] { 0xEF, 0xBB, 0xBF, (byte)'x', (byte)'\n', (byte)'y' }, new[] { "\uFEFFx", "y" })]
    public async Task The_masters_reader_of_a_childs_stderr_is_UTF8_whatever_the_child_writes_first(byte[] bytes, string[] lines) =>
        Assert.Equal(lines, (await Pumped(bytes)).Select(Line));

    [Fact]
    public async Task A_child_flooding_its_stderr_without_line_breaks_costs_one_cut_line_and_other_childs_lines_still_flow()
    {
        var sink = new Collected();
        var (ours, child) = IpcChannel.RawPair(Libc.SOCK_STREAM);
        var flood = StderrPump.RunAsync(ours, ProcessRole.Dispatcher, "dispatcher", () => 4242, Logger(sink));
        long written = 0;
        using var stop = new CancellationTokenSource();
        var writer = Task.Factory.StartNew(
            () =>
            {
                var block = Encoding.ASCII.GetBytes(Pattern(1 << 20));
                while (!stop.IsCancellationRequested)
                {
                    WriteAll(child, block);
                    Interlocked.Add(ref written, block.Length);
                }

                WriteAll(child, "\nINF after the flood\n"u8);
                Libc.Close(child);
            },
            TaskCreationOptions.LongRunning);
        try
        {
            Assert.True(SpinWait.SpinUntil(() => Interlocked.Read(ref written) >= 64 << 20 || writer.IsCompleted, Bound), "64 MiB were not read");
            Assert.False(writer.IsCompleted, $"the flood's writer failed: {writer.Exception}");

            // While it floods, another child's lines are read and relogged.
            var other = await Pumped("INF from another child\n"u8.ToArray());
            Assert.Equal<string>(["from another child"], other.Select(Line));
            Assert.False(flood.IsCompleted);
        }
        finally
        {
            await stop.CancelAsync();
        }

        await writer.WaitAsync(Bound);
        await flood.WaitAsync(Bound);
        Assert.Equal<string>([Pattern(MaxLine) + "\u2026", "after the flood"], sink.Events.Select(Line));
    }

    /// <summary>Pumps <paramref name="writes"/> through a socketpair, each read by the pump before the next is written.</summary>
    private static async Task<List<LogEvent>> Pumped(params byte[][] writes)
    {
        var sink = new Collected();
        var (ours, child) = IpcChannel.RawPair(Libc.SOCK_STREAM);
        var pump = StderrPump.RunAsync(ours, ProcessRole.Worker, "pool a", () => 4242, Logger(sink));
        try
        {
            foreach (var write in writes)
            {
                WriteAll(child, write);

                // Read by the pump: nothing left queued in its end (pump still running, so the descriptor is still its).
                Assert.True(
                    SpinWait.SpinUntil(() => pump.IsCompleted || Queued(ours) == 0, Bound),
                    $"the pump did not read the {write.Length} bytes written");
                Assert.False(pump.IsCompleted, $"the pump ended before the end of the stream: {pump.Exception}");
            }
        }
        finally
        {
            Libc.Close(child);
        }

        await pump.WaitAsync(Bound);
        return sink.Events;
    }

    private static Logger Logger(Collected sink) =>
        new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.Sink(sink).CreateLogger();

    private static string Line(LogEvent e) => (string)Property(e, "Line")!;

    private static object? Property(LogEvent e, string name) =>
        e.Properties.TryGetValue(name, out var v) ? ((ScalarValue)v).Value : null;

    /// <summary>Printable characters that show where a cut fell.</summary>
    private static string Pattern(int length) =>
        string.Create(length, 0, static (span, _) =>
        {
            for (var i = 0; i < span.Length; i++)
                span[i] = (char)('0' + (i % 75));
        });

    private static byte[] Concat(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b) => [.. a, .. b];

    private static byte[] Concat(ReadOnlySpan<byte> a, byte[] b, ReadOnlySpan<byte> c, byte[] d, ReadOnlySpan<byte> e) => [.. a, .. b, .. c, .. d, .. e];

    private static byte[][] Chunks(byte[] bytes, int size) => bytes.Chunk(size).ToArray();

    private static unsafe void WriteAll(int fd, ReadOnlySpan<byte> bytes)
    {
        fixed (byte* p = bytes)
        {
            var done = 0;
            while (done < bytes.Length)
            {
                var n = Libc.Write(fd, p + done, (nuint)(bytes.Length - done));
                if (n <= 0)
                    throw new IOException($"write to the child's end failed: {Libc.Describe(Libc.LastError)}");
                done += (int)n;
            }
        }
    }

    /// <summary>Bytes queued unread in a stream socket (FIONREAD).</summary>
    private static int Queued(int fd) =>
        Ioctl(fd, 0x541B, out var queued) == 0 ? queued : throw new IOException($"ioctl(FIONREAD) on {fd}: errno {Marshal.GetLastPInvokeError()}");

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int Ioctl(int fd, nuint request, out int value);

    private sealed class Collected : ILogEventSink
    {
        private readonly List<LogEvent> _events = [];

        public List<LogEvent> Events
        {
            get
            {
                lock (_events)
                    return [.. _events];
            }
        }

        public void Emit(LogEvent logEvent)
        {
            lock (_events)
                _events.Add(logEvent);
        }
    }
}
