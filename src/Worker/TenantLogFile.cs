using System.Globalization;
using System.Text;
using Dispatch.Platform.Interop;
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
/// <para>A write that fails (the disk full, a quota) drops that line and serving goes on. The failure is reported once to
/// the worker's own log (the master's), not once per line, and when a line can be written again, so is that, with the
/// number of lines lost in between (docs/faults.md).</para>
/// </summary>
internal sealed class TenantLogFile : ILogEventSink, IDisposable
{
    private static readonly MessageTemplateTextFormatter MessageOnly = new("{Message:lj}", CultureInfo.InvariantCulture);

    private readonly Lock _gate = new();
    private readonly Func<LogEvent, string> _format;
    private readonly string _name;
    private readonly Serilog.ILogger? _problems;
    private FileStream _stream;
    private long _dropped;
    private string? _failure;
    private bool _cut;

    private TenantLogFile(int fd, Func<LogEvent, string> format, string name, Serilog.ILogger? problems)
    {
        _stream = Open(fd);
        _format = format;
        _name = name;
        _problems = problems;
    }

    /// <summary>
    /// An access log on <paramref name="fd"/>: combined format, or one JSON object per line (<paramref name="json"/>,
    /// <c>accessLogFormat</c>); write failures are reported to <paramref name="problems"/>.
    /// </summary>
    public static TenantLogFile Access(int fd, string vhost, Serilog.ILogger? problems = null, bool json = false) =>
        new(fd, json ? FormatAccessJson : FormatAccess, $"access log of {vhost}", problems);

    /// <summary>An error log (one event per line) on <paramref name="fd"/>; write failures are reported to <paramref name="problems"/>.</summary>
    public static TenantLogFile Error(int fd, string vhost, Serilog.ILogger? problems = null) => new(fd, FormatError, $"error log of {vhost}", problems);

    /// <summary>Lines dropped since the last failure began (0 while the file is written).</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

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
        string? began = null;
        long recovered = 0;
        lock (_gate)
        {
            // A line cut short when the disk filled is ended before the next one, so no two lines run together.
            var error = _cut ? Write("\n"u8) : 0;
            if (error == 0)
            {
                _cut = false;
                error = Write(bytes); // one write(2) on an O_APPEND descriptor: lines never interleave
            }

            if (error == 0)
            {
                if (_failure is not null)
                {
                    recovered = _dropped;
                    _failure = null;
                    _dropped = 0;
                }
            }
            else
            {
                // A full disk must not take the site down: the line is dropped, the failure reported once.
                if (_failure is null)
                    _failure = began = System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(error);
                _dropped++;
            }
        }

        if (began is not null)
            _problems?.Warning("The {Log:l} cannot be written ({Reason:l}): its lines are dropped until it can be written again", _name, began);
        else if (recovered > 0)
            _problems?.Information("The {Log:l} is written again; {Dropped} lines were dropped while it could not be", _name, recovered);
    }

    /// <summary>Writes all of <paramref name="bytes"/>: 0, or the errno that stopped it (<see cref="_cut"/> set if part was written).</summary>
    private unsafe int Write(ReadOnlySpan<byte> bytes)
    {
        var fd = (int)_stream.SafeFileHandle.DangerousGetHandle();
        var done = 0;
        fixed (byte* p = bytes)
        {
            while (done < bytes.Length)
            {
                var n = Libc.Write(fd, p + done, (nuint)(bytes.Length - done));
                if (n < 0)
                {
                    var errno = Libc.LastError;
                    if (errno == Libc.EINTR)
                        continue;
                    _cut |= done > 0;
                    return errno;
                }

                done += (int)n;
            }
        }

        return 0;
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

    private static readonly System.Text.Json.JsonWriterOptions JsonLine = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>
    /// The same fields as <see cref="FormatAccess"/>, as one JSON object per line (docs/operations.md, "The access-log
    /// line"): absent fields are null, numbers are numbers, strings are JSON strings (control characters, quotes and
    /// backslashes escaped, so a line is always one line; a lone UTF-16 surrogate becomes U+FFFD).
    /// </summary>
    internal static string FormatAccessJson(LogEvent logEvent)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(512);
        using (var w = new System.Text.Json.Utf8JsonWriter(buffer, JsonLine))
        {
            w.WriteStartObject();
            w.WriteString("time", logEvent.Timestamp.ToString("yyyy-MM-dd'T'HH:mm:ss.fffzzz", CultureInfo.InvariantCulture));
            String("vhost", "Vhost");
            String("client", "ClientAddress");
            String("method", "Method");
            if (Value(logEvent, "Target") is null)
                String("target", "Path", Value(logEvent, "Query") is string query ? query : null);
            else
                String("target", "Target");
            String("protocol", "Protocol");
            Number("status", "Status");
            Number("bytes", "Bytes");
            String("referer", "Referer");
            String("userAgent", "UserAgent");
            String("tls", "TlsProtocol");
            String("sni", "Sni");
            if (Value(logEvent, "ElapsedMs") is double ms)
                w.WriteNumber("requestTime", Math.Round(ms / 1000, 3));
            else
                w.WriteNull("requestTime");
            w.WriteEndObject();

            void String(string key, string property, string? suffix = null)
            {
                if (Value(logEvent, property) is { } value)
                    w.WriteString(key, WellFormed(Convert.ToString(value, CultureInfo.InvariantCulture) + suffix));
                else
                    w.WriteNull(key);
            }

            void Number(string key, string property)
            {
                switch (Value(logEvent, property))
                {
                    case int i:
                        w.WriteNumber(key, i);
                        break;
                    case long l:
                        w.WriteNumber(key, l);
                        break;
                    default:
                        w.WriteNull(key);
                        break;
                }
            }
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan) + "\n";
    }

    private static object? Value(LogEvent logEvent, string name) =>
        logEvent.Properties.TryGetValue(name, out var v) && v is ScalarValue { Value: { } x } ? x : null;

    /// <summary><paramref name="value"/> with every lone UTF-16 surrogate (which no JSON writer can encode) replaced by U+FFFD.</summary>
    private static string WellFormed(string value)
    {
        for (var i = 0; i < value.Length; i++)
        {
            if (!char.IsSurrogate(value[i]))
                continue;
            if (char.IsHighSurrogate(value[i]) && i + 1 < value.Length && char.IsLowSurrogate(value[i + 1]))
            {
                i++;
                continue;
            }

            return Replace(value);
        }

        return value;

        static string Replace(string text)
        {
            var chars = text.ToCharArray();
            for (var i = 0; i < chars.Length; i++)
            {
                if (char.IsHighSurrogate(chars[i]) && i + 1 < chars.Length && char.IsLowSurrogate(chars[i + 1]))
                    i++;
                else if (char.IsSurrogate(chars[i]))
                    chars[i] = '\uFFFD';
            }

            return new string(chars);
        }
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
