using System.Globalization;
using Serilog.Core;
using Serilog.Events;
using Serilog.Formatting.Display;
using Serilog.Formatting.Json;

namespace Dispatch.Fuzz;

/// <summary>
/// A Serilog sink that renders every event as the master's own sinks do (its text template and its JSON formatter),
/// keeps the text lines, and remembers the first event at Error or above with an exception (a parser's bug logged
/// by a catch-all, as the worker's record layer does).
/// </summary>
internal sealed class CapturingSink : ILogEventSink
{
    private static readonly MessageTemplateTextFormatter Text = new("[{Level:u3}] {Message:lj}{NewLine}{Exception}", CultureInfo.InvariantCulture);
    private static readonly JsonFormatter Json = new(renderMessage: true, formatProvider: CultureInfo.InvariantCulture);

    public List<LogEvent> Events { get; } = [];

    public List<string> TextLines { get; } = [];

    public LogEvent? Bug { get; private set; }

    public void Emit(LogEvent logEvent)
    {
        ArgumentNullException.ThrowIfNull(logEvent);
        lock (Events)
        {
            Events.Add(logEvent);
            using var text = new StringWriter(CultureInfo.InvariantCulture);
            Text.Format(logEvent, text);
            TextLines.Add(text.ToString());
            using var json = new StringWriter(CultureInfo.InvariantCulture);
            Json.Format(logEvent, json);
            if (logEvent.Level >= LogEventLevel.Error && logEvent.Exception is not null)
                Bug ??= logEvent;
        }
    }

    public void Clear()
    {
        lock (Events)
        {
            Events.Clear();
            TextLines.Clear();
            Bug = null;
        }
    }
}
