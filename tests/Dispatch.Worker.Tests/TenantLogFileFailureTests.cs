using Dispatch.Platform.Interop;
using Dispatch.Worker.Tests.Support;
using Serilog.Core;
using Serilog.Events;

namespace Dispatch.Worker.Tests;

/// <summary>A tenant log that cannot be written (a full disk: /dev/full answers every write with ENOSPC) drops lines, says so once, and says so again when it is written again.</summary>
public sealed class TenantLogFileFailureTests
{
    private sealed class Collected : ILogEventSink
    {
        public List<string> Lines { get; } = [];

        public void Emit(LogEvent logEvent)
        {
            lock (Lines)
                Lines.Add($"{logEvent.Level}: {logEvent.RenderMessage(System.Globalization.CultureInfo.InvariantCulture)}");
        }
    }

    [Fact]
    public void A_full_disk_is_reported_once_not_per_line_and_the_recovery_with_the_lines_lost()
    {
        using var dir = new TempDir();
        var problems = new Collected();
        var worker = new Serilog.LoggerConfiguration().WriteTo.Sink(problems).CreateLogger();
        var full = Libc.Open("/dev/full", Libc.O_WRONLY | Libc.O_CLOEXEC, 0);
        Assert.True(full >= 0, "/dev/full");
        using var file = TenantLogFile.Access(full, "a.example", worker);
        var log = new Serilog.LoggerConfiguration().WriteTo.Sink(file).CreateLogger();
        for (var i = 0; i < 100; i++)
            log.Information("{Vhost} {ClientAddress} \"{Method} {Path}\" {Status} {Bytes} {Protocol}", "a.example", "192.0.2.7", "GET", $"/{i}", 200, 1, "HTTP/1.1");

        var only = Assert.Single(problems.Lines);
        Assert.Equal("Warning: The access log of a.example cannot be written (No space left on device): its lines are dropped until it can be written again", only);
        Assert.Equal(100, file.Dropped);

        // Space again (here: logrotate's reopen onto a writable file): the next line is written, and the loss reported.
        var path = dir.Combine("access.log");
        file.Reopen(Libc.Open(path, Libc.O_WRONLY | Libc.O_APPEND | Libc.O_CREAT | Libc.O_CLOEXEC, 0x180));
        log.Information("{Vhost} {ClientAddress} \"{Method} {Path}\" {Status} {Bytes} {Protocol}", "a.example", "192.0.2.7", "GET", "/after", 200, 1, "HTTP/1.1");
        Assert.Equal(2, problems.Lines.Count);
        Assert.Equal("Information: The access log of a.example is written again; 100 lines were dropped while it could not be", problems.Lines[1]);
        Assert.Contains("GET /after HTTP/1.1", File.ReadAllText(path), StringComparison.Ordinal);
        Assert.Equal(0, file.Dropped);
    }
}
