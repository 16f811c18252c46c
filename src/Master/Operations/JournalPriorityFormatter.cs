using System.Globalization;
using Dispatch.Platform.Interop;
using Serilog.Events;
using Serilog.Formatting;

namespace Dispatch.Master.Operations;

/// <summary>
/// The master's console lines as systemd's journal reads them: each line begins with its syslog priority, <c>&lt;3&gt;</c>
/// for an error, <c>&lt;4&gt;</c> a warning, <c>&lt;6&gt;</c> information (sd-daemon(3)), which journald takes off the
/// line and keeps as the entry's priority, so that <c>journalctl -u dispatch -p warning</c> shows the warnings and worse.
/// Every line of an event gets it (an exception's frames too: journald makes each line an entry). Used only when the
/// master's stdout is the journal's stream (<see cref="IsJournalStream"/>); elsewhere the lines stay as they are. This
/// formatter wraps the JSON console's; the text console's lines, which the console sink renders from its own template
/// (enums unquoted, as the tests and operators read them), get the prefix from <see cref="JournalPriorityEnricher"/>.
/// </summary>
internal sealed class JournalPriorityFormatter(ITextFormatter inner) : ITextFormatter
{
    /// <summary>The priority prefix of <paramref name="level"/>: crit, err, warning, info, debug.</summary>
    public static string Prefix(LogEventLevel level) => level switch
    {
        LogEventLevel.Fatal => "<2>",
        LogEventLevel.Error => "<3>",
        LogEventLevel.Warning => "<4>",
        LogEventLevel.Information => "<6>",
        _ => "<7>",
    };

    public void Format(LogEvent logEvent, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(logEvent);
        ArgumentNullException.ThrowIfNull(output);
        using var text = new StringWriter(CultureInfo.InvariantCulture);
        inner.Format(logEvent, text);
        var prefix = Prefix(logEvent.Level);
        var all = text.ToString().AsSpan();
        while (!all.IsEmpty)
        {
            var end = all.IndexOf('\n');
            var line = end < 0 ? all : all[..(end + 1)];
            output.Write(prefix);
            output.Write(line);
            all = all[line.Length..];
        }
    }

    /// <summary>
    /// Whether the descriptor <paramref name="fd"/> (stdout) is the stream systemd connected to the journal: systemd sets
    /// <c>JOURNAL_STREAM</c> to that stream's device and inode ("dev:ino", decimal) for a service whose output goes to the
    /// journal, and a process whose output was redirected elsewhere inherits the variable with another stream, so both
    /// are compared (systemd.exec(5)).
    /// </summary>
    public static unsafe bool IsJournalStream(string? journalStream, int fd = 1)
    {
        if (journalStream?.Split(':') is not [var devText, var inoText]
            || !ulong.TryParse(devText, NumberStyles.None, CultureInfo.InvariantCulture, out var dev)
            || !ulong.TryParse(inoText, NumberStyles.None, CultureInfo.InvariantCulture, out var ino))
            return false;
        Libc.Stat st;
        return Libc.FStat(fd, &st) == 0 && st.Dev == dev && st.Ino == ino;
    }
}
