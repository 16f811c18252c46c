using System.Globalization;
using System.Text;
using Microsoft.Win32.SafeHandles;
using Serilog.Core;
using Serilog.Events;

namespace Dispatch.Worker;

/// <summary>
/// A vhost's access log: the combined log format plus the TLS protocol and SNI, written to a
/// descriptor the master opened (the worker opens no log itself). The descriptor is swapped when the
/// master reopens the logs (SIGUSR1, after logrotate).
/// <code>
/// client - - [22/Nov/2026:10:00:00 +0000] "GET /path HTTP/1.1" 200 1234 "referer" "user-agent" TLSv1.3 a.example
/// </code>
/// </summary>
internal sealed class AccessLogFile : ILogEventSink, IDisposable
{
    private readonly Lock _gate = new();
    private FileStream _stream;

    public AccessLogFile(int fd) => _stream = Open(fd);

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
        string P(string name) => logEvent.Properties.TryGetValue(name, out var v) && v is ScalarValue { Value: { } x } ? Convert.ToString(x, CultureInfo.InvariantCulture) ?? "-" : "-";
        var offset = logEvent.Timestamp.Offset;
        var zone = $"{(offset < TimeSpan.Zero ? '-' : '+')}{Math.Abs(offset.Hours):00}{Math.Abs(offset.Minutes):00}";
        var line = string.Create(
            CultureInfo.InvariantCulture,
            $"{P("ClientAddress")} - - [{logEvent.Timestamp:dd/MMM/yyyy:HH:mm:ss} {zone}] \"{P("Method")} {P("Path")}{P("Query").Replace("-", string.Empty, StringComparison.Ordinal)} {P("Protocol")}\" {P("Status")} {P("Bytes")} \"{P("Referer")}\" \"{P("UserAgent")}\" {P("TlsProtocol")} {P("Sni")}\n");
        var bytes = Encoding.UTF8.GetBytes(line);
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
}
