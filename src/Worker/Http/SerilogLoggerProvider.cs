using Microsoft.Extensions.Logging;
using Serilog.Core;
using Serilog.Events;
using MelILogger = Microsoft.Extensions.Logging.ILogger;

namespace Dispatch.Worker.Http;

/// <summary>
/// Routes Microsoft.Extensions.Logging (Kestrel, hosting, StaticFiles) to a Serilog logger, Warning and above only.
/// A dozen lines instead of a Serilog.Extensions.Logging dependency; scopes are not carried.
/// </summary>
internal sealed class SerilogLoggerProvider(Serilog.ILogger log) : ILoggerProvider
{
    public const LogLevel MinimumLevel = LogLevel.Warning;

    public MelILogger CreateLogger(string categoryName) =>
        new SerilogLogger(log.ForContext(Constants.SourceContextPropertyName, categoryName));

    public void Dispose()
    {
    }

    private sealed class SerilogLogger(Serilog.ILogger log) : MelILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) =>
            logLevel is >= MinimumLevel and < LogLevel.None && log.IsEnabled(Map(logLevel));

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel))
            {
                return;
            }

            log.Write(Map(logLevel), exception, "{EventName}: {Message:l}", eventId.Name ?? eventId.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), formatter(state, exception));
        }

        private static LogEventLevel Map(LogLevel level) => level switch
        {
            LogLevel.Trace => LogEventLevel.Verbose,
            LogLevel.Debug => LogEventLevel.Debug,
            LogLevel.Information => LogEventLevel.Information,
            LogLevel.Warning => LogEventLevel.Warning,
            LogLevel.Error => LogEventLevel.Error,
            _ => LogEventLevel.Fatal,
        };
    }
}
