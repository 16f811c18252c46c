using System.Globalization;
using Dispatch.Master.Operations;
using Dispatch.Platform.Interop;
using Serilog.Events;
using Serilog.Formatting.Display;
using Serilog.Parsing;

namespace Dispatch.Master.Tests.Operations;

public sealed class JournalPriorityFormatterTests
{
    private static readonly MessageTemplateTextFormatter Text = new("[{Level:u3}] {Message:lj}{NewLine}{Exception}", CultureInfo.InvariantCulture);

    private static string Format(LogEventLevel level, string message, Exception? exception = null)
    {
        var e = new LogEvent(DateTimeOffset.UnixEpoch, level, exception, new MessageTemplateParser().Parse(message), []);
        using var output = new StringWriter(CultureInfo.InvariantCulture);
        new JournalPriorityFormatter(Text).Format(e, output);
        return output.ToString();
    }

    [Theory]
    [InlineData(LogEventLevel.Fatal, "<2>")]
    [InlineData(LogEventLevel.Error, "<3>")]
    [InlineData(LogEventLevel.Warning, "<4>")]
    [InlineData(LogEventLevel.Information, "<6>")]
    [InlineData(LogEventLevel.Debug, "<7>")]
    [InlineData(LogEventLevel.Verbose, "<7>")]
    public void A_line_begins_with_its_syslog_priority(LogEventLevel level, string prefix) =>
        Assert.Equal(prefix + "[" + LevelText(level) + "] something happened" + Environment.NewLine, Format(level, "something happened"));

    [Fact]
    public void Every_line_of_an_exception_carries_the_priority_too()
    {
        Exception thrown;
        try
        {
            throw new InvalidOperationException("broken");
        }
        catch (InvalidOperationException e)
        {
            thrown = e;
        }

        var lines = Format(LogEventLevel.Error, "a reload failed", thrown).Split('\n', StringSplitOptions.RemoveEmptyEntries);

        Assert.True(lines.Length >= 3, string.Join(" | ", lines));
        Assert.All(lines, l => Assert.StartsWith("<3>", l, StringComparison.Ordinal));
        Assert.Equal("<3>System.InvalidOperationException: broken", lines[1]);
    }

    [Fact]
    public unsafe void Only_the_stream_systemd_named_is_the_journal()
    {
        var fds = stackalloc int[2];
        Assert.Equal(0, Libc.Pipe2(fds, 0x80000 /* O_CLOEXEC */));
        try
        {
            Libc.Stat st;
            Assert.Equal(0, Libc.FStat(fds[1], &st));

            Assert.True(JournalPriorityFormatter.IsJournalStream($"{st.Dev}:{st.Ino}", fds[1]));
            // Inherited by a process whose output went elsewhere: another stream.
            Assert.False(JournalPriorityFormatter.IsJournalStream($"{st.Dev}:{st.Ino + 1}", fds[1]));
            using (var other = File.OpenHandle("/dev/null"))
                Assert.False(JournalPriorityFormatter.IsJournalStream($"{st.Dev}:{st.Ino}", (int)other.DangerousGetHandle()));
            Assert.False(JournalPriorityFormatter.IsJournalStream(null, fds[1]));
            Assert.False(JournalPriorityFormatter.IsJournalStream("", fds[1]));
            Assert.False(JournalPriorityFormatter.IsJournalStream($"{st.Dev}", fds[1]));
            Assert.False(JournalPriorityFormatter.IsJournalStream($"{st.Dev}:{st.Ino}:1", fds[1]));
            Assert.False(JournalPriorityFormatter.IsJournalStream($"-{st.Dev}:{st.Ino}", fds[1]));
        }
        finally
        {
            Libc.Close(fds[0]);
            Libc.Close(fds[1]);
        }
    }

    private static string LevelText(LogEventLevel level) => level switch
    {
        LogEventLevel.Fatal => "FTL",
        LogEventLevel.Error => "ERR",
        LogEventLevel.Warning => "WRN",
        LogEventLevel.Information => "INF",
        LogEventLevel.Debug => "DBG",
        _ => "VRB",
    };
}
