using Dispatch.Platform.Interop;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;
using Microsoft.AspNetCore.Http;

namespace Dispatch.Worker.Tests;

/// <summary>The error log's line format, written through a real descriptor as the worker does.</summary>
public sealed class ErrorLogFormatTests
{
    [Fact]
    public void A_request_event_is_one_line_with_client_request_and_no_control_characters()
    {
        using var dir = new TempDir();
        var path = dir.Combine("error.log");
        var fd = Libc.Open(path, Libc.O_WRONLY | Libc.O_APPEND | Libc.O_CREAT | Libc.O_CLOEXEC, 0x180);
        Assert.True(fd >= 0);
        using (var file = TenantLogFile.Error(fd, "a.example"))
        {
            var log = new Serilog.LoggerConfiguration().WriteTo.Sink(file).CreateLogger().ForContext(RequestErrors.VhostProperty, "a.example");
            var vhost = new Vhost(Harness.Vhost("a.example", "/srv/a"), new ConfinedFileProvider("/srv/a"), Serilog.Core.Logger.None, log);
            var context = new DefaultHttpContext { TraceIdentifier = "7:00000001" };
            context.Request.Method = "GET";
            context.Request.Path = "/cgi-bin/x.sh";
            context.Connection.RemoteIpAddress = System.Net.IPAddress.Parse("192.0.2.7");
            RequestErrors.For(vhost, context, Serilog.Core.Logger.None).Warning("CGI {Script} stderr: {Line}", "/srv/a/x.sh", "forged\n2026-01-01T00:00:00.000Z [error] b.example\u001b[31m");
            log.Error(new InvalidOperationException("two\nlines"), "Worker-side {What}", "event");
        }

        var lines = File.ReadAllLines(path);
        Assert.Equal(2, lines.Length);
        Assert.Matches(
            @"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z \[warn\] a\.example client=192\.0\.2\.7 request=7:00000001 ""GET /cgi-bin/x\.sh"" CGI /srv/a/x\.sh stderr: forged\?2026-01-01T00:00:00\.000Z \[error\] b\.example\?\[31m$",
            lines[0]);
        Assert.Matches(@"^\S+Z \[error\] a\.example Worker-side event \(InvalidOperationException: two\?lines\)$", lines[1]);

        // Without an error log, the caller's log is used, untouched.
        var plain = new Vhost(Harness.Vhost("b.example", "/srv/b"), new ConfinedFileProvider("/srv/b"), Serilog.Core.Logger.None);
        Assert.Same(Serilog.Core.Logger.None, RequestErrors.For(plain, new DefaultHttpContext(), Serilog.Core.Logger.None));
    }
}
