using System.Text.Json;
using Serilog.Events;
using Serilog.Formatting;

namespace Dispatch.Platform.Hosting;

/// <summary>
/// How a jailed child writes its log to stderr, which the master reads and re-logs: one line per
/// event, <c>LVL message</c>, then a unit separator (U+001F) and the event's scalar properties as a
/// JSON object (so that the master's JSON log keeps <c>Vhost</c>, <c>Pool</c>, <c>ConnectionId</c>...),
/// then the exception's lines if any. Read back by the master's StderrPump with <see cref="Split"/>.
/// </summary>
public sealed class ChildLogFormatter : ITextFormatter
{
    public const char Separator = '\u001f';
    public const int MaxProperties = 16;
    public const int MaxValueLength = 512;
    private static readonly Serilog.Formatting.Display.MessageTemplateTextFormatter MessageOnly = new("{Message:lj}", System.Globalization.CultureInfo.InvariantCulture);

    public void Format(LogEvent logEvent, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(logEvent);
        ArgumentNullException.ThrowIfNull(output);
        output.Write(logEvent.Level switch
        {
            LogEventLevel.Verbose => "VRB ",
            LogEventLevel.Debug => "DBG ",
            LogEventLevel.Information => "INF ",
            LogEventLevel.Warning => "WRN ",
            LogEventLevel.Error => "ERR ",
            _ => "FTL ",
        });
        using (var message = new StringWriter(System.Globalization.CultureInfo.InvariantCulture))
        {
            // As the text console rendered it before: strings without quotes ("l"), structures as JSON ("j").
            MessageOnly.Format(logEvent, message);
            output.Write(Clean(message.ToString()));
        }

        var scalars = logEvent.Properties.Where(p => p.Value is ScalarValue).Take(MaxProperties).ToList();
        if (scalars.Count > 0)
        {
            output.Write(Separator);
            using var buffer = new MemoryStream();
            using (var json = new Utf8JsonWriter(buffer))
            {
                json.WriteStartObject();
                foreach (var (name, value) in scalars)
                {
                    switch (((ScalarValue)value).Value)
                    {
                        case null:
                            json.WriteNull(name);
                            break;
                        case bool b:
                            json.WriteBoolean(name, b);
                            break;
                        case int or long or uint or ulong or short or ushort or byte or double or float or decimal:
                            json.WriteNumber(name, Convert.ToDecimal(((ScalarValue)value).Value, System.Globalization.CultureInfo.InvariantCulture));
                            break;
                        case var other:
                            var text = Convert.ToString(other, System.Globalization.CultureInfo.InvariantCulture) ?? string.Empty;
                            json.WriteString(name, text.Length > MaxValueLength ? text[..MaxValueLength] : text);
                            break;
                    }
                }

                json.WriteEndObject();
            }

            output.Write(System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
        }

        output.Write('\n');
        if (logEvent.Exception is not null)
        {
            // One line per frame, each cleaned: text a client chose cannot start a line of its own.
            foreach (var line in logEvent.Exception.ToString().Split('\n'))
                output.Write("ERR   " + Clean(line) + "\n");
        }
    }

    /// <summary>
    /// Every control character (CR, LF, ESC, the separator...) and the Unicode line separators become a space, and half
    /// a surrogate pair without its other half U+FFFD (as the UTF-8 decoder reads invalid bytes): the text is valid
    /// UTF-16 whatever it was.
    /// </summary>
    private static string Clean(string text) =>
        string.Create(text.Length, text, static (span, t) =>
        {
            for (var i = 0; i < t.Length; i++)
            {
                var c = t[i];
                if (char.IsHighSurrogate(c) && i + 1 < t.Length && char.IsLowSurrogate(t[i + 1]))
                {
                    span[i] = c;
                    span[++i] = t[i];
                }
                else
                {
                    span[i] = char.IsControl(c) || c is '\u2028' or '\u2029' ? ' ' : char.IsSurrogate(c) ? '\uFFFD' : c;
                }
            }
        });

    /// <summary>
    /// The master's decoder of a child's stderr: UTF-8, always. A byte-order mark does not switch it to another
    /// encoding (a child that writes FF FE first would otherwise have the rest read as UTF-16, where its line
    /// breaks are no longer the master's) nor is it skipped (EF BB BF reads as U+FEFF); invalid bytes read as U+FFFD.
    /// </summary>
    public static System.Text.Decoder NewDecoder() =>
        new System.Text.UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();

    /// <summary>
    /// The master's side: a line's text and its properties (names of letters, digits and '_', at most
    /// <see cref="MaxProperties"/>, values scalars). A child is less trusted than the master: anything
    /// malformed is kept as text, never believed as properties. Nor is the text believed clean: control
    /// characters and line separators in it (or in a property's string) become spaces, as <see cref="Format"/>
    /// writes them, so one line of a child's never becomes two lines of the master's log. Never throws: a line the
    /// JSON reader refuses in any way is kept whole as text.
    /// </summary>
    public static (string Text, List<KeyValuePair<string, object?>> Properties) Split(string line)
    {
        var properties = new List<KeyValuePair<string, object?>>();
        var at = line.IndexOf(Separator, StringComparison.Ordinal);
        if (at < 0)
            return (Clean(line), properties);
        var text = Clean(line[..at]);
        try
        {
            using var doc = JsonDocument.Parse(line.AsMemory(at + 1), new JsonDocumentOptions { MaxDepth = 2 });
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                return (text, properties);
            foreach (var p in doc.RootElement.EnumerateObject().Take(MaxProperties))
            {
                if (p.Name.Length is 0 or > 40 || !p.Name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_'))
                    continue;
                object? value = p.Value.ValueKind switch
                {
                    JsonValueKind.String => p.Value.GetString() is { Length: <= MaxValueLength } s ? Clean(s) : null,
                    JsonValueKind.Number => p.Value.TryGetInt64(out var l) ? (object)l : p.Value.GetDouble(),
                    JsonValueKind.True => true,
                    JsonValueKind.False => false,
                    _ => null,
                };
                if (value is not null)
                    properties.Add(new(p.Name, value));
            }
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException or FormatException)
        {
            // Not JSON properties: JsonException for a syntax error, ArgumentException for text that is not UTF-16 (a
            // lone surrogate), InvalidOperationException for an escaped one (\ud800) in a name or a string,
            // FormatException for a number no double holds. Whatever the reader says, the line is text.
            return (Clean(line), []);
        }

        return (text, properties);
    }
}
