using Microsoft.AspNetCore.Http;

namespace Dispatch.Worker.Http;

/// <summary>
/// Where a worker reports problems that belong to a vhost (a CGI script's stderr and failures, a proxied application
/// that is down or slow, a file under the root that cannot be read, an unhandled error answered 500): the vhost's own
/// error log when it has one (<c>errorLog</c>, opened by the master), each event with the client address, request id
/// and request line; otherwise the worker's log (stderr, which the master re-logs), as before. Problems of the worker
/// itself stay on stderr.
/// </summary>
internal static class RequestErrors
{
    public const string VhostProperty = "Vhost";
    public const string ClientProperty = "ClientAddress";
    public const string RequestIdProperty = "RequestId";
    public const string MethodProperty = "Method";
    public const string PathProperty = "Path";

    /// <summary>
    /// The logger for events of <paramref name="vhost"/> during <paramref name="context"/>'s request: the vhost's error
    /// log with the request's properties captured now (safe to use after the request), or <paramref name="fallback"/>.
    /// Called only when there is something to report, so the request path pays nothing.
    /// </summary>
    public static Serilog.ILogger For(Vhost vhost, HttpContext context, Serilog.ILogger fallback)
    {
        ArgumentNullException.ThrowIfNull(vhost);
        ArgumentNullException.ThrowIfNull(context);
        if (vhost.ErrorLog is not { } log)
        {
            return fallback;
        }

        return log.ForContext(
        [
            new PropertyEnricher(ClientProperty, context.Connection.RemoteIpAddress?.ToString() ?? "-"),
            new PropertyEnricher(RequestIdProperty, context.TraceIdentifier),
            new PropertyEnricher(MethodProperty, context.Request.Method),
            new PropertyEnricher(PathProperty, context.Request.Path.Value ?? "/"),
        ]);
    }

    private sealed class PropertyEnricher(string name, string value) : Serilog.Core.ILogEventEnricher
    {
        public void Enrich(Serilog.Events.LogEvent logEvent, Serilog.Core.ILogEventPropertyFactory propertyFactory) =>
            logEvent.AddOrUpdateProperty(propertyFactory.CreateProperty(name, value));
    }
}
