using Dispatch.Platform.Interop;
using Dispatch.Worker.Tests.Support;

namespace Dispatch.Worker.Tests;

/// <summary>The access log's line format, written through a real descriptor as the worker does: nothing a client sends can forge a line.</summary>
public sealed class AccessLogFormatTests
{
    [Fact]
    public void Client_chosen_fields_are_escaped_so_a_request_cannot_forge_a_line_or_break_the_quoting()
    {
        using var dir = new TempDir();
        var path = dir.Combine("access.log");
        var fd = Libc.Open(path, Libc.O_WRONLY | Libc.O_APPEND | Libc.O_CREAT | Libc.O_CLOEXEC, 0x180);
        Assert.True(fd >= 0);
        using (var file = TenantLogFile.Access(fd, "a.example"))
        {
            var log = new Serilog.LoggerConfiguration().WriteTo.Sink(file).CreateLogger();

            // What Kestrel hands over for GET /x%0a6.6.6.6%20-%20-%20[04/Dec/2026...]%20%22GET%20/admin... (decoded).
            log.ForContext("Referer", "http://evil/\"\r\n")
                .ForContext("UserAgent", "curl \u001b[31m\\ \"quoted\" é")
                .ForContext("Query", "?a-b=c-d")
                .ForContext("TlsProtocol", "TLSv1.3")
                .ForContext("ElapsedMs", 1234.5678)
                .Information(
                    "{Vhost} {ClientAddress} \"{Method} {Path}\" {Status} {Bytes} {Protocol} {Sni}",
                    "a.example",
                    "192.0.2.7",
                    "GET",
                    "/x\n6.6.6.6 - - [04/Dec/2026:10:00:00 +0000] \"GET /admin HTTP/1.1\" 200 1",
                    200,
                    12,
                    "HTTP/1.1",
                    "a.example");
            log.Information("{Vhost} {ClientAddress} \"{Method} {Path}\" {Status} {Bytes} {Protocol}", "a.example", "192.0.2.8", "GET", "/plain", 404, 0, "HTTP/2");
            log.ForContext("Target", "/a%20b?c=%41\"").ForContext("Query", "?c=A").ForContext("ElapsedMs", 2.0)
                .Information("{Vhost} {ClientAddress} \"{Method} {Path}\" {Status} {Bytes} {Protocol}", "a.example", "192.0.2.9", "GET", "/a b", 200, 3, "HTTP/1.1");
        }

        var lines = File.ReadAllLines(path);
        Assert.Equal(3, lines.Length);
        Assert.Matches(
            @"^192\.0\.2\.7 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] ""GET /x\\x0A6\.6\.6\.6 - - \[04/Dec/2026:10:00:00 \+0000\] \\x22GET /admin HTTP/1\.1\\x22 200 1\?a-b=c-d HTTP/1\.1"" 200 12 ""http://evil/\\x22\\x0D\\x0A"" ""curl \\x1B\[31m\\x5C \\x22quoted\\x22 \\xC3\\xA9"" TLSv1\.3 a\.example 1\.235$",
            lines[0]);

        // Absent fields are "-" and an absent query adds nothing.
        Assert.Matches(@"^192\.0\.2\.8 - - \[[^\]]+\] ""GET /plain HTTP/2"" 404 0 ""-"" ""-"" - - -$", lines[1]);

        // The raw request target, when the worker gives it, is what the line shows (escaped like every field).
        Assert.Matches(@"^192\.0\.2\.9 - - \[[^\]]+\] ""GET /a%20b\?c=%41\\x22 HTTP/1\.1"" 200 3 ""-"" ""-"" - - 0\.002$", lines[2]);
    }
}
