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

    /// <summary>
    /// <c>accessLogFormat: json</c>, through a real descriptor: one object per line whatever the client sent (a forged
    /// line, quotes, backslashes, an escape sequence, a lone surrogate), read back by a JSON parser with the values as they
    /// were; numbers as numbers, absent fields null.
    /// </summary>
    [Fact]
    public void The_json_format_is_one_object_per_line_that_a_parser_reads_back_as_it_was_written()
    {
        using var dir = new TempDir();
        var path = dir.Combine("access.json");
        var fd = Libc.Open(path, Libc.O_WRONLY | Libc.O_APPEND | Libc.O_CREAT | Libc.O_CLOEXEC, 0x180);
        Assert.True(fd >= 0);
        const string forged = "/x\n6.6.6.6 - - [04/Dec/2026:10:00:00 +0000] \"GET /admin HTTP/1.1\" 200 1";
        const string agent = "curl \u001b[31m\\ \"quoted\" \u00e9 \u2028";
        using (var file = TenantLogFile.Access(fd, "a.example", json: true))
        {
            var log = new Serilog.LoggerConfiguration().WriteTo.Sink(file).CreateLogger();
            log.ForContext("Referer", "http://evil/\"\r\n{")
                .ForContext("UserAgent", agent)
                .ForContext("Query", "?a=b")
                .ForContext("TlsProtocol", "TLSv1.3")
                .ForContext("ElapsedMs", 1234.5678)
                .ForContext("Target", "/x%0a\ud800y")
                .Information(
                    "{Vhost} {ClientAddress} \"{Method} {Path}\" {Status} {Bytes} {Protocol} {Sni}",
                    "a.example",
                    "192.0.2.7",
                    "GET",
                    forged,
                    200,
                    12L,
                    "HTTP/2",
                    "a.example");
            log.Information("{Vhost} {ClientAddress} \"{Method} {Path}\" {Status} {Bytes} {Protocol}", "a.example", "192.0.2.8", "HEAD", forged, 404, 0, "HTTP/1.1");
        }

        var lines = File.ReadAllLines(path);
        Assert.Equal(2, lines.Length);
        using var first = System.Text.Json.JsonDocument.Parse(lines[0]);
        var e = first.RootElement;
        Assert.Equal("a.example", e.GetProperty("vhost").GetString());
        Assert.Equal("192.0.2.7", e.GetProperty("client").GetString());
        Assert.Equal("/x%0a\ufffdy", e.GetProperty("target").GetString());
        Assert.Equal("HTTP/2", e.GetProperty("protocol").GetString());
        Assert.Equal(200, e.GetProperty("status").GetInt32());
        Assert.Equal(12, e.GetProperty("bytes").GetInt64());
        Assert.Equal("http://evil/\"\r\n{", e.GetProperty("referer").GetString());
        Assert.Equal(agent, e.GetProperty("userAgent").GetString());
        Assert.Equal("TLSv1.3", e.GetProperty("tls").GetString());
        Assert.Equal("a.example", e.GetProperty("sni").GetString());
        Assert.Equal(1.235, e.GetProperty("requestTime").GetDouble());
        Assert.True(DateTimeOffset.TryParseExact(e.GetProperty("time").GetString(), "yyyy-MM-dd'T'HH:mm:ss.fffzzz", System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.None, out _));

        // Without a raw target, the decoded path and the query (the forged line stays inside its string); absent fields null.
        using var second = System.Text.Json.JsonDocument.Parse(lines[1]);
        var s = second.RootElement;
        Assert.Equal(forged, s.GetProperty("target").GetString());
        Assert.Equal("HEAD", s.GetProperty("method").GetString());
        Assert.Equal(404, s.GetProperty("status").GetInt32());
        Assert.Equal(0, s.GetProperty("bytes").GetInt64());
        foreach (var absent in new[] { "referer", "userAgent", "tls", "sni", "requestTime" })
            Assert.Equal(System.Text.Json.JsonValueKind.Null, s.GetProperty(absent).ValueKind);
    }
}
