using Serilog.Core;
using Serilog.Events;

namespace Dispatch.TlsDispatcher.Tests;

/// <summary>A Serilog sink that keeps what it is given, for tests that read what was logged.</summary>
internal sealed class CollectingSink : ILogEventSink
{
    public List<LogEvent> Events { get; } = [];

    public int Count
    {
        get
        {
            lock (Events)
                return Events.Count;
        }
    }

    /// <summary>The messages so far, rendered.</summary>
    public List<string> Lines()
    {
        lock (Events)
            return [.. Events.Select(e => e.RenderMessage())];
    }

    public void Emit(LogEvent logEvent)
    {
        lock (Events)
            Events.Add(logEvent);
    }
}
