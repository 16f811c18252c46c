using System.Globalization;
using System.Text;
using Dispatch.Worker.Http;
using Microsoft.Win32.SafeHandles;
using Serilog.Core;
using Serilog.Events;
using Serilog.Formatting.Display;

namespace Dispatch.Worker;

/// <summary>
/// A vhost's log file, written to a descriptor the master opened (the worker opens no log itself); the descriptor is
/// swapped when the master reopens the logs (SIGUSR1, after logrotate). One line per event, written with one
/// write(2) on an O_APPEND descriptor, so lines never interleave. Two formats:
/// <para><see cref="Access"/>: the combined log format plus the TLS protocol and SNI.</para>
/// <code>
/// client - - [22/Nov/2026:10:00:00 +0000] "GET /path HTTP/1.1" 200 1234 "referer" "user-agent" TLSv1.3 a.example
/// </code>
/// <para><see cref="Error"/>: timestamp (UTC, ISO 8601), level, vhost, client address, request id and request line
/// where the event belongs to a request, then the message. Control characters become '?', so a tenant's CGI stderr
/// cannot forge lines.</para>
/// <code>
/// 2026-11-22T10:00:00.123Z [warn] a.example client=127.0.0.1 request=0HN8QK:00000001 "GET /cgi-bin/x.sh" CGI /srv/a/cgi-bin/x.sh of a.example (pid 4242) stderr: no such table
/// </code>
/// </summary>
internal sealed class TenantLogFile : ILogEventSink, IDisposable
{
    private static readonly MessageTemplateTextFormatter MessageOnly = new("{Message:lj}", CultureInfo.InvariantCulture);

    private readonly Lock _gate = new();
    private readonly Func<LogEvent, string> _format;
    private FileStream _stream;

    private TenantLogFile(int fd, Func<LogEvent, string> format)
    {
        _stream = Open(fd);
        _format = format;
    }

    /// <summary>An access log (combined format) on <paramref name="fd"/>.</summary>
    public static TenantLogFile Access(int fd) => new(fd, FormatAccess);

    /// <summary>An error log (one event per line) on <paramref name="fd"/>.</summary>
    public static TenantLogFile Error(int fd) => new(fd, FormatError);

    public void Reopen(int fd)
    {
        var fresh = Open(fd);
        FileStream old;
        lock (_gate)
        {
            old = _stream;
            _stream = fresh;
        }

        old.Dispose();
    }

    private static FileStream Open(int fd) => new(new SafeFileHandle(fd, ownsHandle: true), FileAccess.Write, bufferSize: 0);

    public void Emit(LogEvent logEvent)
    {
        var bytes = Encoding.UTF8.GetBytes(_format(logEvent));
        lock (_gate)
        {
            try
            {
                _stream.Write(bytes); // one write(2) on an O_APPEND descriptor: lines never interleave
            }
            catch (IOException)
            {
                // A full disk must not take the site down.
            }
        }
    }

    public void Dispose() => _stream.Dispose();

    private static string Property(LogEvent logEvent, string name) =>
        logEvent.Properties.TryGetValue(name, out var v) && v is ScalarValue { Value: { } x } ? Convert.ToString(x, CultureInfo.InvariantCulture) ?? "-" : "-";

    /// <summary>
    /// One access-log field as nginx escapes it: control characters, DEL, non-ASCII, <c>"</c> and <c>\</c> become
    /// <c>\xHH</c> (of their UTF-8 bytes), so no client-chosen text can end the line, break the quoting or forge a line.
    /// </summary>
    internal static string EscapeField(string value)
    {
        var clean = true;
        foreach (var c in value)
        {
            if (c < 0x20 || c >= 0x7F || c == '"' || c == '\\')
            {
                clean = false;
                break;
            }
        }

        if (clean)
            return value;
        var text = new StringBuilder(value.Length + 16);
        foreach (var b in Encoding.UTF8.GetBytes(value))
        {
            if (b < 0x20 || b >= 0x7F || b == (byte)'"' || b == (byte)'\\')
                text.Append(CultureInfo.InvariantCulture, $"\\x{b:X2}");
            else
                text.Append((char)b);
        }

        return text.ToString();
    }

    private static string FormatAccess(LogEvent logEvent)
    {
        string P(string name) => EscapeField(Property(logEvent, name));
        var offset = logEvent.Timestamp.Offset;
        var zone = $"{(offset < TimeSpan.Zero ? '-' : '+')}{Math.Abs(offset.Hours):00}{Math.Abs(offset.Minutes):00}";

        // The request target as the client sent it (RawTarget: still percent-encoded, query included); an event without
        // one (written by another source) falls back to the decoded path and the query.
        var target = Property(logEvent, "Target") is not "-" and var raw ? EscapeField(raw) : P("Path") + (P("Query") is "-" ? string.Empty : P("Query"));

        // The request time in seconds with millisecond resolution, as nginx's $request_time.
        var seconds = logEvent.Properties.TryGetValue("ElapsedMs", out var e) && e is ScalarValue { Value: double ms }
            ? (ms / 1000).ToString("0.000", CultureInfo.InvariantCulture)
            : "-";
        return string.Create(
            CultureInfo.InvariantCulture,
            $"{P("ClientAddress")} - - [{logEvent.Timestamp:dd/MMM/yyyy:HH:mm:ss} {zone}] \"{P("Method")} {target} {P("Protocol")}\" {P("Status")} {P("Bytes")} \"{P("Referer")}\" \"{P("UserAgent")}\" {P("TlsProtocol")} {P("Sni")} {seconds}\n");
    }

    private static string FormatError(LogEvent logEvent)
    {
        var text = new StringBuilder(256);
        text.Append(CultureInfo.InvariantCulture, $"{logEvent.Timestamp.UtcDateTime:yyyy-MM-ddTHH:mm:ss.fff}Z [{LevelName(logEvent.Level)}] {Property(logEvent, "Vhost")}");
        if (logEvent.Properties.ContainsKey(RequestErrors.RequestIdProperty))
        {
            text.Append(CultureInfo.InvariantCulture, $" client={Property(logEvent, RequestErrors.ClientProperty)} request={Property(logEvent, RequestErrors.RequestIdProperty)} \"{Property(logEvent, RequestErrors.MethodProperty)} {Property(logEvent, RequestErrors.PathProperty)}\"");
        }

        text.Append(' ');
        using (var message = new StringWriter(CultureInfo.InvariantCulture))
        {
            MessageOnly.Format(logEvent, message);
            text.Append(message.ToString());
        }

        if (logEvent.Exception is { } e)
        {
            text.Append(CultureInfo.InvariantCulture, $" ({e.GetType().Name}: {e.Message})");
        }

        for (var i = 0; i < text.Length; i++)
        {
            if (char.IsControl(text[i]))
            {
                text[i] = text[i] == '\t' ? ' ' : '?';
            }
        }

        return text.Append('\n').ToString();
    }

    private static string LevelName(LogEventLevel level) => level switch
    {
        LogEventLevel.Fatal => "fatal",
        LogEventLevel.Error => "error",
        LogEventLevel.Warning => "warn",
        LogEventLevel.Information => "info",
        _ => "debug",
    };
}
