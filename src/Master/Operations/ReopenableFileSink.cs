using Serilog;
using Serilog.Core;
using Serilog.Events;
using Serilog.Formatting;

namespace Dispatch.Master.Operations;

/// <summary>
/// The master's log file (<c>log.file</c>, text or JSON per <c>log.format</c>): a Serilog file sink that
/// SIGUSR1 replaces with a fresh one on the same path, so logrotate can move the old file away.
/// </summary>
internal sealed class ReopenableFileSink : ILogEventSink, IDisposable
{
    private readonly string _path;
    private readonly ITextFormatter _formatter;
    private readonly Lock _gate = new();
    private Serilog.Core.Logger _sink;

    public ReopenableFileSink(string path, ITextFormatter formatter)
    {
        _path = path;
        _formatter = formatter;
        _sink = Open();
    }

    private Serilog.Core.Logger Open() => new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.File(_formatter, _path).CreateLogger();

    public void Emit(LogEvent logEvent)
    {
        lock (_gate)
            _sink.Write(logEvent);
    }

    public void Reopen()
    {
        lock (_gate)
        {
            var fresh = Open();
            _sink.Dispose();
            _sink = fresh;
        }
    }

    public void Dispose()
    {
        lock (_gate)
            _sink.Dispose();
    }
}
