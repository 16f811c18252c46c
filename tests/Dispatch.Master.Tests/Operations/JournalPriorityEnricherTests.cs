using System.Globalization;
using Dispatch.Master.Operations;
using Serilog;
using Serilog.Core;
using Serilog.Events;
using Serilog.Formatting.Display;

namespace Dispatch.Master.Tests.Operations;

public sealed class JournalPriorityEnricherTests
{
    private sealed class Collect : ILogEventSink
    {
        public List<LogEvent> Events { get; } = [];

        public void Emit(LogEvent logEvent) => Events.Add(logEvent);
    }

    private static string Render(LogEvent e, string template)
    {
        using var output = new StringWriter(CultureInfo.InvariantCulture);
        new MessageTemplateTextFormatter(template, CultureInfo.InvariantCulture).Format(e, output);
        return output.ToString();
    }

    [Fact]
    public void The_template_begins_with_the_priority_and_takes_the_exception_line_by_line()
    {
        var template = JournalPriorityEnricher.Template("[{Level:u3}] {Message:lj}{NewLine}{Exception}");

        Assert.Equal("{JournalPriority:l}[{Level:u3}] {Message:lj}{NewLine}{JournalException:l}", template);
    }

    [Fact]
    public void Each_line_of_an_event_and_of_its_exception_carries_its_priority()
    {
        var sink = new Collect();
        using (var log = new LoggerConfiguration().MinimumLevel.Verbose().Enrich.With<JournalPriorityEnricher>().WriteTo.Sink(sink).CreateLogger())
        {
            log.Warning("Worker {Pid} of pool {Pool} given up", 42, "a");
            try
            {
                throw new InvalidOperationException("broken");
            }
            catch (InvalidOperationException e)
            {
                log.Error(e, "A reload failed");
            }

            log.Debug("quiet");
        }

        var template = JournalPriorityEnricher.Template("[{Level:u3}] {Message:lj}{NewLine}{Exception}");
        Assert.Equal("<4>[WRN] Worker 42 of pool a given up" + Environment.NewLine, Render(sink.Events[0], template));
        var error = Render(sink.Events[1], template).Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.True(error.Length >= 3, string.Join(" | ", error));
        Assert.Equal("<3>[ERR] A reload failed", error[0]);
        Assert.Equal("<3>System.InvalidOperationException: broken", error[1]);
        Assert.All(error, l => Assert.StartsWith("<3>", l, StringComparison.Ordinal));
        Assert.Equal("<7>[DBG] quiet" + Environment.NewLine, Render(sink.Events[2], template));
    }
}
