using System.Diagnostics;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.StaticFiles;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Net.Http.Headers;
using Serilog.Events;
using Serilog.Parsing;
using Yarp.ReverseProxy.Forwarder;

namespace Dispatch.Worker.Http;

/// <summary>
/// The request entry point: picks the vhost by Host, runs its pipeline (CGI, static files), writes the access log.
/// </summary>
internal sealed class RequestHandler(VhostTable vhosts, Serilog.ILogger defaultAccessLog, Serilog.ILogger log)
{
    /// <summary>Serilog SourceContext of access-log events (route them with a sub-logger filter).</summary>
    public const string AccessLogSourceContext = "Dispatch.Worker.Http.AccessLog";

    /// <summary>Access-log message template; the properties are the contract, the text is for humans.</summary>
    public const string AccessLogTemplate =
        "{Vhost} {ClientAddress} \"{Method} {Path}\" {Status} {Bytes} {Protocol} {ElapsedMs:0.###}ms conn={ConnectionId} sni={Sni}";

    private static readonly MessageTemplate AccessTemplate = new MessageTemplateParser().Parse(AccessLogTemplate);

    private static readonly byte[] BadRequestBody = Encoding.UTF8.GetBytes("Bad Request: no Host\n");
    private static readonly byte[] MisdirectedBody = Encoding.UTF8.GetBytes("Misdirected Request: this server does not serve that host\n");
    private static readonly byte[] NotFoundBody = Encoding.UTF8.GetBytes("Not Found\n");
    private static readonly byte[] MethodNotAllowedBody = Encoding.UTF8.GetBytes("Method Not Allowed\n");

    /// <summary>
    /// Unknown extensions are served as application/octet-stream rather than refused: a static host serves whatever
    /// the tenant uploads (fonts, archives, data files the mapping lacks), and with nosniff plus octet-stream a browser
    /// downloads rather than renders them.
    /// </summary>
    private static readonly FileExtensionContentTypeProvider ContentTypes = new();

    public async Task InvokeAsync(HttpContext context)
    {
        // The connection is set up: its place goes to the next one waiting (ConnectionAdmission).
        var handed = context.Features.Get<IHandedConnectionFeature>();
        (handed as HandedConnectionFeature)?.Admission?.Release();
        var transport = context.Features.Get<SendTimeoutPipeWriter>();
        if (context.RequestAborted.IsCancellationRequested || transport is { OutputEnded: true })
        {
            // The connection is gone (the client reset it while the previous response was sent), but Kestrel goes on
            // to a request pipelined behind that one, already in its input: it is not served to no one, nor logged.
            context.Abort();
            EndConnectionIfGone(context, transport);
            return;
        }

        var started = Stopwatch.GetTimestamp();
        ConfinedFileProvider.BeginRequest();

        // Captured before the pipeline: DefaultFiles rewrites Request.Path to the index file.
        var method = context.Request.Method;
        var path = context.Request.Path;
        Vhost? vhost = null;
        var failed = false;
        var info = handed?.Info;
        if (info?.TlsProtocol is not null)
        {
            // The dispatcher terminated TLS and proxies plaintext: the client's scheme is https (redirects, IsHttps).
            context.Request.Scheme = Uri.UriSchemeHttps;
        }

        context.Response.Headers.XContentTypeOptions = "nosniff";

        // Under every handler: the access log's byte count is what reached the connection (CountingResponseBody).
        var body = new CountingResponseBody(context.Features.GetRequiredFeature<IHttpResponseBodyFeature>(), context.RequestAborted, transport);
        context.Features.Set<IHttpResponseBodyFeature>(body);
        try
        {
            string? authority = context.Request.Headers.Host;
            if (!VhostTable.TryGetHostName(authority, out var host))
            {
                await WriteTextAsync(context, StatusCodes.Status400BadRequest, BadRequestBody, close: true);
            }
            else if (!vhosts.TryFind(host, out vhost))
            {
                // The client reconnects and is routed again by the dispatcher (RFC 9110, 15.5.20).
                await WriteTextAsync(context, StatusCodes.Status421MisdirectedRequest, MisdirectedBody, close: true);
            }
            else if (vhost.Identity is { } identity && await identity.CheckAsync(context.Request.Headers.Authorization) is { } notMine)
            {
                // Not this worker's login: the client reconnects and is authenticated afresh by the dispatcher.
                log.Information("Request {Method} {Path} for {Vhost} on connection {ConnectionId} refused with 421: {Reason}, and this worker serves login {Login} only", method, path.Value, vhost.Name, context.Connection.Id, notMine, identity.Login);
                await WriteTextAsync(context, StatusCodes.Status421MisdirectedRequest, MisdirectedBody, close: true);
            }
            else
            {
                await vhost.Pipeline(context);
            }
        }
        catch (UnreadableFileException e) when (vhost is not null && !context.Response.HasStarted)
        {
            // A file under the root that the tenant's own worker cannot open (permissions, a symlink swapped in): the
            // client gets the same 404 as for anything refused; the vhost's error log gets the reason.
            RequestErrors.For(vhost, context, log).Warning("Static file {File} of {Vhost} could not be read: {Reason}", e.FileName, vhost.Name, e.Message);
            context.Response.Clear();
            context.Response.Headers.XContentTypeOptions = "nosniff";
            await WriteTextAsync(context, StatusCodes.Status404NotFound, NotFoundBody, close: false);
        }
        catch (Exception e)
        {
            failed = true;
            if (vhost?.ErrorLog is { } errorLog)
            {
                // Kestrel answers 500 (or aborts) and logs the exception to the worker's log; the tenant's log says it too.
                RequestErrors.For(vhost, context, errorLog).Error(e, "Request to {Vhost} failed: answered 500 or aborted", vhost.Name);
            }

            throw;
        }
        finally
        {
            WriteAccessLog(context, info, vhost, method, path, started, failed, body);
            context.Features.Set(body.Inner);
            EndConnectionIfGone(context, transport);
        }
    }

    /// <summary>
    /// After a request on an HTTP/1.x connection whose client is gone (reset, or its output ended: a stalled reader that
    /// closed), tells Kestrel to read no next request. Otherwise Kestrel goes back to the connection's input for one, and
    /// the input's end (the reset) is thrown there and caught again by its connection loop: two exceptions for every
    /// client that leaves mid-response, 10,000 when a flood of 5,000 stalled readers closes, and the worker's thread pool
    /// queued thousands deep behind them while the site's other clients waited (docs/floods.md). HTTP/2 is left alone:
    /// a stream's end is not its connection's.
    /// </summary>
    private static void EndConnectionIfGone(HttpContext context, SendTimeoutPipeWriter? transport)
    {
        var protocol = context.Request.Protocol;
        if ((context.RequestAborted.IsCancellationRequested || transport is { OutputEnded: true })
            && (HttpProtocol.IsHttp11(protocol) || HttpProtocol.IsHttp10(protocol)))
        {
            context.Features.Get<IConnectionLifetimeNotificationFeature>()?.RequestClose();
        }
    }

    /// <summary>Builds one branch pipeline per vhost (at start, not per request): CGI prefixes first, then proxied
    /// prefixes, then static files.</summary>
    public static void BuildPipelines(
        IApplicationBuilder app, VhostTable vhosts, CgiHandler cgi, ProxyHandler? proxy = null, FastCgi.FastCgiHandler? fastCgi = null, Func<Vhost, string?>? fastCgiSocket = null, Serilog.ILogger? log = null)
    {
        ArgumentNullException.ThrowIfNull(app);
        ArgumentNullException.ThrowIfNull(cgi);
        foreach (var vhost in vhosts.All)
        {
            var branch = app.New();

            // First: the body limit, response headers and redirects (docs/vhost-features.md), then compression around
            // every handler.
            var features = new VhostFeatures(vhost, vhost.Settings.Web ?? Dispatch.Wire.Payloads.VhostWeb.Default, app.ApplicationServices, log ?? Serilog.Core.Logger.None);
            branch.Use(features.Middleware);
            if (features.Compression is { } compression)
            {
                branch.UseMiddleware<Microsoft.AspNetCore.ResponseCompression.ResponseCompressionMiddleware>(compression);
            }

            if (vhost.Settings.Cgi.Count > 0)
            {
                branch.Use(cgi.Middleware(vhost));
            }

            if (proxy is not null && vhost.Settings.Proxy.Count > 0)
            {
                branch.Use(proxy.Middleware(vhost, app.ApplicationServices.GetRequiredService<IHttpForwarder>()));
            }

            var php = fastCgi is not null && vhost.Settings.FastCgi is not null;
            if (fastCgi is not null && (php || vhost.Settings.TryFiles is { Count: > 0 }))
            {
                branch.Use(fastCgi.Middleware(vhost, php ? fastCgiSocket?.Invoke(vhost) ?? vhost.Settings.FastCgi!.OperatorSocket() : null));
            }

            var files = vhost.Files;
            var indexFiles = vhost.Settings.EffectiveIndex().ToList();
            branch.UseDefaultFiles(new DefaultFilesOptions
            {
                FileProvider = files,
                DefaultFileNames = indexFiles,
                RedirectToAppendTrailingSlash = true,
            });
            if (php)
            {
                // PHP source is never served: a script DefaultFiles picked as a directory's index would otherwise be.
                branch.Use(static next => context => context.Request.Path.Value is { } p && p.EndsWith(FastCgi.FastCgiRouter.ScriptExtension, StringComparison.Ordinal)
                    ? WriteTextAsync(context, StatusCodes.Status404NotFound, NotFoundBody, close: false)
                    : next(context));
            }

            if (features.Precompressed)
            {
                branch.Use(PrecompressedMiddleware.For(features, ContentTypes));
            }

            if (vhost.Settings.DirectoryListing)
            {
                branch.UseDirectoryBrowser(new DirectoryBrowserOptions
                {
                    FileProvider = files,
                    RedirectToAppendTrailingSlash = true,
                });
            }

            branch.UseStaticFiles(new StaticFileOptions
            {
                FileProvider = files,
                ContentTypeProvider = ContentTypes,
                ServeUnknownFileTypes = true,
                DefaultContentType = "application/octet-stream",
                RedirectToAppendTrailingSlash = true,
                OnPrepareResponse = StaticFileBody.PrepareResponse,
            });

            // Nothing served it: a directory without index (and no listing), a refused or missing path — all 404,
            // consistently, so a refusal does not reveal whether the target exists. Other methods than GET/HEAD: 405.
            branch.Run(static context => HttpMethods.IsGet(context.Request.Method) || HttpMethods.IsHead(context.Request.Method)
                ? WriteTextAsync(context, StatusCodes.Status404NotFound, NotFoundBody, close: false)
                : WriteMethodNotAllowedAsync(context));
            vhost.Pipeline = branch.Build();
        }
    }

    private static Task WriteMethodNotAllowedAsync(HttpContext context)
    {
        context.Response.Headers.Allow = "GET, HEAD";
        return WriteTextAsync(context, StatusCodes.Status405MethodNotAllowed, MethodNotAllowedBody, close: false);
    }

    /// <summary>The Content-Type static files of this name are served with.</summary>
    internal static string ContentTypeOf(string path) =>
        ContentTypes.TryGetContentType(path, out var type) ? type : "application/octet-stream";

    /// <summary>
    /// Every response the worker writes itself (404, 405, 413, 502, 503, 504...): the vhost's custom error page for the
    /// status when it has one (<see cref="VhostFeatures"/>), otherwise <paramref name="body"/> as plain text.
    /// </summary>
    internal static Task WriteTextAsync(HttpContext context, int status, byte[] body, bool close, bool errorPage = true)
    {
        if (errorPage && status >= 400 && context.Features.Get<VhostFeatures>() is { } features && features.TryGetErrorPage(status, out var page))
        {
            return features.WriteErrorPageAsync(context, status, page, body, close);
        }

        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = "text/plain; charset=utf-8";
        response.ContentLength = body.Length;
        if (close && !HttpProtocol.IsHttp2(context.Request.Protocol) && !HttpProtocol.IsHttp3(context.Request.Protocol))
        {
            // Kestrel closes an HTTP/1.x connection after a response carrying "Connection: close".
            // (HTTP/2 forbids connection-specific headers; there the client opens a new connection for that host.)
            response.Headers.Connection = "close";
        }

        return HttpMethods.IsHead(context.Request.Method) ? Task.CompletedTask : response.Body.WriteAsync(body).AsTask();
    }

    /// <summary>The request's access-log line, and its vhost's counters (the metrics per vhost: <see cref="VhostCounters"/>).</summary>
    private void WriteAccessLog(HttpContext context, HandedConnectionInfo? info, Vhost? vhost, string method, PathString path, long started, bool failed, CountingResponseBody body)
    {
        var log = vhost?.AccessLog ?? defaultAccessLog;
        var logged = log.IsEnabled(LogEventLevel.Information);
        if (!logged && vhost is null)
        {
            return;
        }

        var response = context.Response;
        var status = failed && !response.HasStarted ? StatusCodes.Status500InternalServerError : response.StatusCode;

        // Bytes: the body bytes that reached the connection, whatever the framing (a streamed CGI or proxied response
        // too), and for an aborted one what was sent before the abort; 0 where no body is sent. A handler that failed
        // after the response started gets its connection aborted: what it had buffered is not sent.
        long bytes = HttpMethods.IsHead(method) || status is < 200 or 204 or 304 ? 0 : body.BytesSent(completing: !failed);
        var elapsed = Stopwatch.GetElapsedTime(started);
        vhost?.Traffic.Record(status, bytes, elapsed);
        if (!logged)
        {
            return;
        }

        // The event is built here rather than bound from the template with a ForContext logger per extra field: the
        // same properties (all scalars), without four loggers, the binder's argument array and its property capture.
        // The extra fields, for per-tenant log files (combined log format), are not in the message template.
        var request = context.Request;
        LogEventProperty[] properties =
        [
            new("Vhost", new ScalarValue(vhost?.Name)),
            new("ClientAddress", new ScalarValue(context.Connection.RemoteIpAddress?.ToString())),
            new("Method", new ScalarValue(method)),
            new("Path", new ScalarValue(path.Value)),
            new("Status", new ScalarValue(status)),
            new("Bytes", new ScalarValue(bytes)),
            new("Protocol", new ScalarValue(request.Protocol)),
            new("ElapsedMs", new ScalarValue(elapsed.TotalMilliseconds)),
            new("ConnectionId", new ScalarValue(info?.ConnectionId)),
            new("Sni", new ScalarValue(info?.Sni)),
            new("Referer", new ScalarValue(request.Headers.Referer.ToString() is { Length: > 0 } r ? r : null)),
            new("UserAgent", new ScalarValue(request.Headers.UserAgent.ToString() is { Length: > 0 } ua ? ua : null)),
            new("Query", new ScalarValue(request.QueryString.HasValue ? request.QueryString.Value : null)),
            new("Target", new ScalarValue(context.Features.Get<IHttpRequestFeature>()?.RawTarget is { Length: > 0 } target ? target : null)),
            new("TlsProtocol", new ScalarValue(info?.TlsProtocol ?? context.Features.Get<Microsoft.AspNetCore.Connections.Features.ITlsHandshakeFeature>()?.Protocol.ToString())),
        ];
        log.Write(new LogEvent(DateTimeOffset.Now, LogEventLevel.Information, null, AccessTemplate, properties));
    }
}
