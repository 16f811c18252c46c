using System.Buffers;
using System.Globalization;
using System.Text;
using Dispatch.Worker.Http;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Serilog.Core;

namespace Dispatch.Worker.FastCgi;

/// <summary>
/// FastCGI (PHP through php-fpm) for a vhost; one instance per worker, shared by its vhosts, holding one small
/// <see cref="FastCgiConnectionPool"/> per application socket.
/// </summary>
/// <remarks>
/// <para><b>Request.</b> One FCGI_BEGIN_REQUEST (responder, FCGI_KEEP_CONN) per request on a pooled connection, the
/// parameters of nginx's <c>fastcgi_params</c> plus SCRIPT_FILENAME, PATH_INFO, DOCUMENT_ROOT, HTTPS and the request's
/// header fields as HTTP_* (except Proxy: httpoxy), then the body as STDIN records while the answer is read — never
/// buffered whole. A body without a length (chunked, or HTTP/2 without content-length) is refused with 411: PHP reads
/// exactly CONTENT_LENGTH bytes. The body is bounded by the vhost's <c>maxBodySize</c> (413 beyond it), as for every
/// handler.</para>
/// <para><b>Response.</b> STDOUT is a CGI response (header block parsed strictly by <see cref="CgiResponseHead"/>, then
/// the body streamed); STDERR lines go to the vhost's error log (sanitized, bounded); FCGI_END_REQUEST ends it.</para>
/// <para><b>Errors</b>, each logged once at Warning to the vhost's error log: no connection (refused, missing socket,
/// denied): 502; no connection within the connect timeout: 504; a record that breaks the protocol (version, type,
/// request id, lengths), a header block that is not valid, the connection closing before FCGI_END_REQUEST, or an end
/// status other than "request complete": 502; silence for longer than the read timeout: 504. Once the response has
/// started, the same failures abort the client's connection (a truncated body is never passed off as complete). The
/// application's connection is closed after any error, never reused.</para>
/// </remarks>
internal sealed class FastCgiHandler(Serilog.ILogger log) : IDisposable
{
    /// <summary>SourceContext of FastCGI log events.</summary>
    public const string LogSourceContext = "Dispatch.Worker.FastCgi";

    private const int BodyChunk = 32 * 1024;

    private static readonly byte[] NotFoundBody = Encoding.UTF8.GetBytes("Not Found\n");
    private static readonly byte[] LengthRequiredBody = Encoding.UTF8.GetBytes("Length Required: a request body for a PHP script needs a Content-Length\n");

    private readonly Serilog.ILogger _log = log.ForContext(Constants.SourceContextPropertyName, LogSourceContext);
    private readonly Dictionary<string, FastCgiConnectionPool> _pools = new(StringComparer.Ordinal);
    private readonly Lock _poolsLock = new();

    /// <summary>Checks a vhost's FastCGI settings and <c>tryFiles</c> (at start, with the other vhost checks).</summary>
    /// <exception cref="ArgumentException">Neither or both of socket and spawn, a socket path that is not absolute or too
    /// long, a spawn program that is not absolute, or a <c>tryFiles</c> list of the wrong shape.</exception>
    public static void Check(Dispatch.Protocol.Routing.WorkerVhost vhost)
    {
        ArgumentNullException.ThrowIfNull(vhost);
        if (vhost.FastCgi is { } settings)
        {
            if ((settings.Socket.Length == 0) == (settings.Spawn is null))
            {
                throw new ArgumentException($"FastCGI of vhost '{vhost.Name}' needs exactly one of a socket or a spawned php-fpm.", nameof(vhost));
            }

            if (settings.OperatorSocket() is { } socket && (!socket.StartsWith('/') || !Path.IsPathFullyQualified(socket) || socket.EndsWith('/')
                || Encoding.UTF8.GetByteCount(socket) > 107 || socket.Contains('\0', StringComparison.Ordinal)))
            {
                throw new ArgumentException($"FastCGI socket '{socket}' of vhost '{vhost.Name}' is not an absolute socket path of at most 107 bytes.", nameof(vhost));
            }

            if (settings.Spawn is { } spawn && !Path.IsPathFullyQualified(spawn.Program))
            {
                throw new ArgumentException($"php-fpm program '{spawn.Program}' of vhost '{vhost.Name}' is not an absolute path.", nameof(vhost));
            }
        }

        if (FastCgiRouter.Check(vhost.TryFiles, vhost.FastCgi is not null) is { } problem)
        {
            throw new ArgumentException($"tryFiles of vhost '{vhost.Name}': {problem}.", nameof(vhost));
        }
    }

    /// <summary>The pool of <paramref name="socketPath"/>'s connections (created on first use).</summary>
    public FastCgiConnectionPool PoolFor(string socketPath, TimeSpan connectTimeout, int? maxConnections = null)
    {
        lock (_poolsLock)
        {
            if (!_pools.TryGetValue(socketPath, out var pool))
            {
                pool = new FastCgiConnectionPool(socketPath, connectTimeout, maxConnections);
                _pools[socketPath] = pool;
            }

            return pool;
        }
    }

    /// <summary>
    /// The vhost's FastCGI and front-controller middleware, placed before static files; <paramref name="socketPath"/> is
    /// the application's socket (the configured one, or the spawned php-fpm's), null when the vhost has only <c>tryFiles</c>.
    /// </summary>
    public Func<RequestDelegate, RequestDelegate> Middleware(Vhost vhost, string? socketPath)
    {
        ArgumentNullException.ThrowIfNull(vhost);
        var settings = vhost.Settings.FastCgi;
        var pool = settings is not null && socketPath is not null ? PoolFor(socketPath, settings.EffectiveConnectTimeout()) : null;
        IReadOnlyList<string> tryFiles = vhost.Settings.TryFiles ?? [];
        var index = vhost.Settings.EffectiveIndex();
        return next => context =>
        {
            var route = FastCgiRouter.Route(context.Request.Path.Value ?? "/", vhost.Files, pool is not null, tryFiles, index, vhost.Settings.DirectoryListing);
            switch (route.Kind)
            {
                case FastCgiRouteKind.Script:
                    return RunScriptAsync(context, vhost, settings!, pool!, route);
                case FastCgiRouteKind.NotFound:
                    return RequestHandler.WriteTextAsync(context, StatusCodes.Status404NotFound, NotFoundBody, close: false);
                case FastCgiRouteKind.AddSlash:
                    context.Response.StatusCode = StatusCodes.Status301MovedPermanently;
                    context.Response.Headers.Location = context.Request.PathBase + context.Request.Path + "/" + context.Request.QueryString;
                    return Task.CompletedTask;
                default:
                    if (route.StaticPath is { } rewritten)
                    {
                        context.Request.Path = rewritten;
                    }

                    return next(context);
            }
        };
    }

    public void Dispose()
    {
        lock (_poolsLock)
        {
            foreach (var pool in _pools.Values)
            {
                pool.Dispose();
            }

            _pools.Clear();
        }
    }

    private async Task RunScriptAsync(HttpContext context, Vhost vhost, Dispatch.Protocol.Routing.FastCgiRoute settings, FastCgiConnectionPool pool, FastCgiRoute route)
    {
        using var exchange = new Exchange(this, context, vhost, settings, pool, route);
        await exchange.RunAsync();
    }

    /// <summary>The parameters (nginx's fastcgi_params and more) for one request.</summary>
    internal static FastCgiParams BuildParams(HttpContext context, Vhost vhost, FastCgiRoute route)
    {
        var request = context.Request;
        var connection = context.Connection;
        var root = vhost.Settings.Root.Length > 1 ? vhost.Settings.Root.TrimEnd('/') : vhost.Settings.Root;
        var remote = connection.RemoteIpAddress is { IsIPv4MappedToIPv6: true } mapped ? mapped.MapToIPv4() : connection.RemoteIpAddress;
        var local = connection.LocalIpAddress is { IsIPv4MappedToIPv6: true } localMapped ? localMapped.MapToIPv4() : connection.LocalIpAddress;
        var requestUri = context.Features.Get<IHttpRequestFeature>()?.RawTarget is { Length: > 0 } raw && raw[0] == '/'
            ? raw
            : request.PathBase + request.Path + request.QueryString;
        var p = new FastCgiParams();
        p.Add("GATEWAY_INTERFACE", "CGI/1.1");
        p.Add("SERVER_SOFTWARE", "Dispatch");
        p.Add("QUERY_STRING", request.QueryString.HasValue ? request.QueryString.Value![1..] : string.Empty);
        p.Add("REQUEST_METHOD", request.Method);
        p.Add("CONTENT_TYPE", request.Headers.ContentType.Count > 0 ? request.Headers.ContentType.ToString() : string.Empty);
        p.Add("CONTENT_LENGTH", request.ContentLength is { } length ? length.ToString(CultureInfo.InvariantCulture) : string.Empty);
        p.Add("SCRIPT_NAME", route.ScriptName);
        p.Add("SCRIPT_FILENAME", root + route.ScriptName);
        p.Add("PATH_INFO", route.PathInfo);
        if (route.PathInfo.Length > 0)
        {
            p.Add("PATH_TRANSLATED", root + route.PathInfo);
        }

        p.Add("REQUEST_URI", requestUri);
        p.Add("DOCUMENT_URI", route.ScriptName + route.PathInfo);
        p.Add("DOCUMENT_ROOT", root);
        p.Add("SERVER_PROTOCOL", request.Protocol);
        p.Add("REQUEST_SCHEME", request.IsHttps ? "https" : "http");
        if (request.IsHttps)
        {
            p.Add("HTTPS", "on");
        }

        p.Add("REMOTE_ADDR", remote?.ToString() ?? string.Empty);
        p.Add("REMOTE_PORT", connection.RemotePort.ToString(CultureInfo.InvariantCulture));
        p.Add("SERVER_ADDR", local?.ToString() ?? string.Empty);
        p.Add("SERVER_PORT", connection.LocalPort.ToString(CultureInfo.InvariantCulture));
        p.Add("SERVER_NAME", vhost.Name);
        p.Add("REDIRECT_STATUS", "200");
        foreach (var (name, values) in request.Headers)
        {
            if (!CgiHandler.IsPassableHeaderName(name))
            {
                continue;
            }

            var value = values.Count == 1
                ? values[0]!
                : string.Join(name.Equals("Cookie", StringComparison.OrdinalIgnoreCase) ? "; " : ", ", values.ToArray());
            if (!value.Contains('\0', StringComparison.Ordinal))
            {
                p.Add("HTTP_" + name.ToUpperInvariant().Replace('-', '_'), value);
            }
        }

        if (request.Headers.Host.Count == 0 && request.Host.HasValue)
        {
            p.Add("HTTP_HOST", request.Host.Value); // HTTP/2 :authority
        }

        return p;
    }

    /// <summary>One request through FastCGI.</summary>
    private sealed class Exchange(FastCgiHandler owner, HttpContext context, Vhost vhost, Dispatch.Protocol.Routing.FastCgiRoute settings, FastCgiConnectionPool pool, FastCgiRoute route) : IDisposable
    {
        private readonly CancellationTokenSource _silence = new();
        private readonly Lock _timerLock = new();
        private Exception? _bodyError;
        private bool _finished;

        private Serilog.ILogger Log => RequestErrors.For(vhost, context, owner._log);

        public async Task RunAsync()
        {
            var request = context.Request;
            var canHaveBody = context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? request.ContentLength > 0;
            if (canHaveBody && request.ContentLength is null)
            {
                await RequestHandler.WriteTextAsync(context, StatusCodes.Status411LengthRequired, LengthRequiredBody, close: true);
                return;
            }

            FastCgiParams parameters;
            try
            {
                parameters = BuildParams(context, vhost, route);
            }
            catch (InvalidOperationException e)
            {
                Warn("{Reason}", e.Message);
                await RequestHandler.WriteTextAsync(context, StatusCodes.Status431RequestHeaderFieldsTooLarge, Encoding.UTF8.GetBytes("Request Header Fields Too Large\n"), close: true);
                return;
            }

            var aborted = context.RequestAborted;
            FastCgiConnection? connection = null;
            var rented = false;
            try
            {
                connection = await pool.RentAsync(aborted);
                rented = true;
                try
                {
                    await connection.SendHeadAsync(parameters, aborted);
                }
                catch (IOException) when (connection.Reused && !aborted.IsCancellationRequested)
                {
                    // The application closed the pooled connection just now; nothing of the request was consumed: once more.
                    connection.Dispose();
                    connection = null;
                    connection = await pool.ConnectAsync(aborted);
                    await connection.SendHeadAsync(parameters, aborted);
                }
            }
            catch (UpstreamConnectException e)
            {
                var (status, page) = GatewayAnswers.ForConnect(e.Failure);
                if (rented)
                {
                    pool.Discard(connection);
                }

                Warn("cannot connect, {Reason}", e.Message);
                await RequestHandler.WriteTextAsync(context, status, page, close: false);
                return;
            }
            catch (IOException e)
            {
                if (rented)
                {
                    pool.Discard(connection);
                }

                Warn("sending the request failed: {Reason}", e.Message);
                await RequestHandler.WriteTextAsync(context, StatusCodes.Status502BadGateway, GatewayAnswers.Unavailable, close: false);
                return;
            }
            catch (OperationCanceledException) when (aborted.IsCancellationRequested)
            {
                if (rented)
                {
                    pool.Discard(connection);
                }

                return;
            }

            var clean = false;
            using var stopBody = CancellationTokenSource.CreateLinkedTokenSource(aborted);
            Task body = Task.CompletedTask;
            try
            {
                ArmSilenceTimer();
                body = SendBodyAsync(connection, stopBody.Token);
                clean = await ReadAnswerAsync(connection);
                if (clean && !body.IsCompleted)
                {
                    // The application answered: its last STDIN record is written, or it did not read the body (then
                    // the connection is unusable).
                    try
                    {
                        await body.WaitAsync(TimeSpan.FromSeconds(1), aborted);
                    }
                    catch (Exception e) when (e is TimeoutException or IOException or OperationCanceledException)
                    {
                    }
                }

                clean = clean && body.IsCompletedSuccessfully;
            }
            finally
            {
                lock (_timerLock)
                {
                    _finished = true;
                }

                if (clean)
                {
                    pool.Return(connection);
                }
                else
                {
                    stopBody.Cancel();
                    pool.Discard(connection);
                }

                try
                {
                    await body;
                }
                catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException or BadHttpRequestException)
                {
                }
            }
        }

        public void Dispose()
        {
            lock (_timerLock)
            {
                _finished = true;
            }

            _silence.Dispose();
        }

        /// <summary>The request body as STDIN records, then the empty one; re-arms the silence timer per chunk.</summary>
        private async Task SendBodyAsync(FastCgiConnection connection, CancellationToken cancellationToken)
        {
            var buffer = ArrayPool<byte>.Shared.Rent(BodyChunk);
            try
            {
                var source = context.Request.Body;
                while (true)
                {
                    int n;
                    try
                    {
                        n = await source.ReadAsync(buffer.AsMemory(0, BodyChunk), cancellationToken);
                    }
                    catch (Exception e) when (e is not OperationCanceledException)
                    {
                        // Too large (413), malformed, or the client left: the application must not see a complete request.
                        Volatile.Write(ref _bodyError, e);
                        CancelSilence();
                        throw;
                    }

                    if (n == 0)
                    {
                        break;
                    }

                    await connection.SendStdinAsync(buffer.AsMemory(0, n), cancellationToken);
                    ArmSilenceTimer();
                }

                await connection.SendEndOfStdinAsync(cancellationToken);
                ArmSilenceTimer();
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }

        /// <summary>Reads records until FCGI_END_REQUEST; true when the request ended cleanly (the connection is reusable).</summary>
        private async Task<bool> ReadAnswerAsync(FastCgiConnection connection)
        {
            var response = context.Response;
            var aborted = context.RequestAborted;
            var record = ArrayPool<byte>.Shared.Rent(FastCgiRecord.MaxContentLength);
            var head = ArrayPool<byte>.Shared.Rent(CgiLimits.MaxHeaderBytes);
            var headFilled = 0;
            var headDone = false;
            var sendBody = true;
            long sent = 0;
            long? declared = null;
            var stderr = new FastCgiStderrLog(
                (line, truncated) => Log.Warning(
                    "FastCGI {Socket} of {Vhost} stderr: {Line}{Truncated}", pool.SocketPath, vhost.Name, line, truncated ? " [truncated]" : string.Empty),
                () => Log.Warning("FastCGI {Socket} of {Vhost}: further stderr output of this request not logged", pool.SocketPath, vhost.Name));
            using var read = CancellationTokenSource.CreateLinkedTokenSource(aborted, _silence.Token);
            try
            {
                while (true)
                {
                    (FastCgiRecordType Type, int Length)? next;
                    try
                    {
                        next = await connection.ReadRecordAsync(record, read.Token);
                    }
                    catch (OperationCanceledException) when (aborted.IsCancellationRequested)
                    {
                        return false; // the client left
                    }
                    catch (OperationCanceledException)
                    {
                        stderr.Complete();
                        if (await AnswerBodyErrorAsync())
                        {
                            return false;
                        }

                        return await FailAsync(
                            headDone, StatusCodes.Status504GatewayTimeout, GatewayAnswers.ReadTimeout, "no answer within {Timeout} s", settings.EffectiveReadTimeout().TotalSeconds);
                    }
                    catch (FastCgiProtocolException e)
                    {
                        stderr.Complete();
                        return await FailAsync(headDone, StatusCodes.Status502BadGateway, GatewayAnswers.InvalidResponse, "malformed answer: {Reason}", e.Message);
                    }
                    catch (IOException e)
                    {
                        stderr.Complete();
                        return await FailAsync(headDone, StatusCodes.Status502BadGateway, GatewayAnswers.InvalidResponse, "the connection failed: {Reason}", e.Message);
                    }

                    ArmSilenceTimer();
                    if (next is not { } got)
                    {
                        stderr.Complete();
                        if (await AnswerBodyErrorAsync())
                        {
                            return false;
                        }

                        return await FailAsync(headDone, StatusCodes.Status502BadGateway, GatewayAnswers.InvalidResponse, "the connection closed before the end of the request{Nothing}", string.Empty);
                    }

                    var content = record.AsMemory(0, got.Length);
                    switch (got.Type)
                    {
                        case FastCgiRecordType.Stderr:
                            stderr.Write(content.Span);
                            continue;
                        case FastCgiRecordType.EndRequest:
                            stderr.Complete();
                            var protocolStatus = content.Span[4];
                            if (protocolStatus != 0)
                            {
                                return await FailAsync(
                                    headDone, StatusCodes.Status502BadGateway, GatewayAnswers.InvalidResponse, "request refused, protocol status {Status} (1: cannot multiplex, 2: overloaded, 3: unknown role)", protocolStatus);
                            }

                            if (!headDone)
                            {
                                if (await AnswerBodyErrorAsync())
                                {
                                    return false;
                                }

                                return await FailAsync(false, StatusCodes.Status502BadGateway, GatewayAnswers.InvalidResponse, "the request ended without a complete header block ({Bytes} bytes of output)", headFilled);
                            }

                            if (sendBody && declared is { } length && sent < length)
                            {
                                Warn("the response ended after {Sent} of its Content-Length bytes: connection aborted", sent);
                                context.Abort();
                                return false;
                            }

                            try
                            {
                                await response.CompleteAsync();
                            }
                            catch (IOException)
                            {
                                // the client left as the response ended; the application's connection is fine
                            }

                            return true;
                        default: // Stdout (ParseHeader admits nothing else)
                            break;
                    }

                    if (content.IsEmpty)
                    {
                        continue; // the end of STDOUT; FCGI_END_REQUEST follows
                    }

                    if (!headDone)
                    {
                        var room = CgiLimits.MaxHeaderBytes - headFilled;
                        var take = Math.Min(room, content.Length);
                        content.Span[..take].CopyTo(head.AsSpan(headFilled));
                        var scanFrom = headFilled;
                        headFilled += take;
                        var bodyStart = CgiResponseHead.FindBodyStart(head.AsSpan(0, headFilled), scanFrom, out var headLength);
                        if (bodyStart < 0)
                        {
                            if (headFilled == CgiLimits.MaxHeaderBytes)
                            {
                                return await FailAsync(false, StatusCodes.Status502BadGateway, GatewayAnswers.InvalidResponse, "no end of the header block within {Max} bytes", CgiLimits.MaxHeaderBytes);
                            }

                            continue;
                        }

                        if (!CgiResponseHead.TryParse(head.AsSpan(0, headLength), out var parsed, out var error))
                        {
                            return await FailAsync(false, StatusCodes.Status502BadGateway, GatewayAnswers.InvalidResponse, "invalid response header: {Reason}", error);
                        }

                        if (await AnswerBodyErrorAsync())
                        {
                            return false;
                        }

                        headDone = true;
                        sendBody = parsed.ApplyTo(context);
                        declared = parsed.ContentLength;

                        // The body bytes that came with the head: those left in the head buffer, then the rest of this record.
                        var first = head.AsMemory(bodyStart, headFilled - bodyStart);
                        content = content[take..];
                        if (!await WriteBodyAsync(first, sendBody, declared, ref sent))
                        {
                            return false;
                        }

                        if (content.IsEmpty)
                        {
                            try
                            {
                                await response.StartAsync(aborted);
                                await response.Body.FlushAsync(aborted);
                            }
                            catch (Exception e) when (e is IOException or OperationCanceledException)
                            {
                                return false;
                            }

                            continue;
                        }
                    }

                    if (!await WriteBodyAsync(content, sendBody, declared, ref sent))
                    {
                        return false;
                    }
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(record);
                ArrayPool<byte>.Shared.Return(head);
            }
        }

        private Task<bool> WriteBodyAsync(ReadOnlyMemory<byte> data, bool sendBody, long? declared, ref long sent)
        {
            if (data.IsEmpty || !sendBody)
            {
                return Task.FromResult(true);
            }

            var take = (int)Math.Min(data.Length, (declared ?? long.MaxValue) - sent);
            if (take < data.Length)
            {
                Warn("the response is longer than its Content-Length {Length}; the rest is dropped", declared);
            }

            if (take <= 0)
            {
                return Task.FromResult(true);
            }

            sent += take;
            return WriteAsync(data[..take]);
        }

        private async Task<bool> WriteAsync(ReadOnlyMemory<byte> data)
        {
            try
            {
                await context.Response.Body.WriteAsync(data, context.RequestAborted);
                return true;
            }
            catch (Exception e) when (e is IOException or OperationCanceledException)
            {
                return false; // the client is gone
            }
        }

        /// <summary>A failure of the application: the error page when nothing was sent yet, else the connection aborted.</summary>
        private async Task<bool> FailAsync(bool started, int status, byte[] body, string problemTemplate, object? detail)
        {
            if (started || context.Response.HasStarted)
            {
                Warn(problemTemplate + " after the response started: connection aborted", detail);
                context.Abort();
                return false;
            }

            Warn(problemTemplate, detail);
            await RequestHandler.WriteTextAsync(context, status, body, close: false);
            return false;
        }

        /// <summary>The client's body failed (too large, malformed, client gone): its answer, not the application's.</summary>
        private async Task<bool> AnswerBodyErrorAsync()
        {
            var error = Volatile.Read(ref _bodyError);
            if (error is null)
            {
                return false;
            }

            if (error is BadHttpRequestException bad && !context.Response.HasStarted)
            {
                await RequestHandler.WriteTextAsync(context, bad.StatusCode, Encoding.UTF8.GetBytes(bad.Message + "\n"), close: true);
            }
            else
            {
                context.Abort();
            }

            return true;
        }

        private void Warn(string problemTemplate, object? detail) =>
            Log.Warning(
                "FastCGI {Socket} of {Vhost} for {Method} {Path} ({Script}): " + problemTemplate,
                pool.SocketPath,
                vhost.Name,
                context.Request.Method,
                context.Request.Path.Value,
                route.ScriptName,
                detail);

        private void ArmSilenceTimer()
        {
            lock (_timerLock)
            {
                if (!_finished)
                {
                    _silence.CancelAfter(settings.EffectiveReadTimeout());
                }
            }
        }

        private void CancelSilence()
        {
            lock (_timerLock)
            {
                if (!_finished)
                {
                    _silence.Cancel();
                }
            }
        }
    }
}
