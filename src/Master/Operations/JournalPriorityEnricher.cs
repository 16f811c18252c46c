using Serilog.Core;
using Serilog.Events;

namespace Dispatch.Master.Operations;

/// <summary>
/// The journal's priority prefix for the console's text lines (<see cref="JournalPriorityFormatter"/> says why): the
/// console sink renders the line from its output template, so the prefix comes as a property the template begins with,
/// and an exception as a property whose every line begins with it too.
/// </summary>
internal sealed class JournalPriorityEnricher : ILogEventEnricher
{
    private const string PriorityProperty = "JournalPriority";
    private const string ExceptionProperty = "JournalException";

    /// <summary><paramref name="template"/> with the prefix first and <c>{Exception}</c> prefixed line by line.</summary>
    public static string Template(string template)
    {
        ArgumentNullException.ThrowIfNull(template);
        return "{" + PriorityProperty + ":l}" + template.Replace("{Exception}", "{" + ExceptionProperty + ":l}", StringComparison.Ordinal);
    }

    public void Enrich(LogEvent logEvent, ILogEventPropertyFactory propertyFactory)
    {
        ArgumentNullException.ThrowIfNull(logEvent);
        ArgumentNullException.ThrowIfNull(propertyFactory);
        var prefix = JournalPriorityFormatter.Prefix(logEvent.Level);
        logEvent.AddOrUpdateProperty(new LogEventProperty(PriorityProperty, new ScalarValue(prefix)));
        var exception = string.Empty;
        if (logEvent.Exception is { } e)
        {
            var lines = e.ToString().Split('\n');
            exception = string.Concat(lines.Select(l => prefix + l.TrimEnd('\r') + Environment.NewLine));
        }

        logEvent.AddOrUpdateProperty(new LogEventProperty(ExceptionProperty, new ScalarValue(exception)));
    }
}
