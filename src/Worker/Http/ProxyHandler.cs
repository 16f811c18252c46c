using System.Net;
using System.Net.Sockets;
using System.Text;
using Dispatch.Protocol.Routing;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Serilog.Core;
using Yarp.ReverseProxy.Forwarder;

namespace Dispatch.Worker.Http;

/// <summary>
/// Reverse proxy to the tenant's own application (<see cref="WorkerVhost.Proxy"/>); one instance per worker, shared by its
/// vhosts. The forwarding itself is YARP's <see cref="IHttpForwarder"/> (direct forwarding), over one pooled
/// <see cref="HttpMessageInvoker"/> per upstream whose connections only our connect callback makes.
/// </summary>
/// <remarks>
/// <para><b>Upstream.</b> HTTP/1.1 over a Unix socket (<c>unix:/path</c>) or a loopback TCP port (127.0.0.0/8,
/// <c>[::1]</c>), as <see cref="ProxyUpstream.TryParse"/> accepts: anything else is refused at start, so a tenant's
/// configuration cannot make its worker a relay into the network. Connections are made by our own connect callback to
/// that endpoint only, whatever the request says (no name resolution, no proxy, no environment variables), pooled, and
/// dropped after <see cref="PooledConnectionIdleTimeout"/> idle — shorter than the keep-alive timeout of common
/// application servers (gunicorn 2 s, Node 5 s), so a request is not sent on a connection the application is closing at
/// that moment. A TCP port is reachable only through the Landlock connect rule the master adds for it. No redirects
/// followed, no cookies kept, no decompression, no trace headers added.</para>
/// <para><b>Request and response</b> fields: <see cref="ProxyTransformer"/>. The request target is passed exactly as the
/// client sent it (<see cref="IHttpRequestFeature.RawTarget"/>, absolute-form reduced to origin-form; no re-encoding,
/// no dot-segment removal — the prefix is matched on Kestrel's decoded, normalised path, while the application gets
/// the raw target, as with nginx's <c>proxy_pass</c> without a URI). Bodies are streamed both ways, never buffered
/// whole; trailers are passed on where the client's protocol carries them.</para>
/// <para><b>WebSockets.</b> An HTTP/1.1 <c>Upgrade: websocket</c> and an HTTP/2 extended CONNECT with
/// <c>:protocol websocket</c> (RFC 8441) both reach the application as an HTTP/1.1 upgrade; after its 101 the two
/// connections are joined byte for byte until either side closes or nothing moves for the read timeout. Other upgrade
/// tokens (h2c…) are ignored, as a server may (RFC 9110, 7.8); CONNECT and extended CONNECT for other protocols get
/// 501.</para>
/// <para><b>Errors</b> (each logged once at Warning with vhost and upstream, to the vhost's error log when it has one:
/// <see cref="RequestErrors"/>): connection refused, socket missing or not permitted: 502; no connection within the
/// connect timeout: 504; the application silent for the read timeout before its response headers: 504; an invalid or
/// missing response: 502; the response breaking off mid-body: the client connection is aborted (a truncated body is
/// never passed off as complete). A client that leaves cancels the upstream request (its connection is closed, not
/// drained). The request body is bounded by Kestrel's MaxRequestBodySize (413 beyond it), which the proxy leaves as
/// the vhost set it (YARP lifts it only for gRPC-looking requests forwarded over HTTP/2, and the upstream here is always
/// HTTP/1.1).</para>
/// </remarks>
internal sealed class ProxyHandler(Serilog.ILogger log) : IDisposable
{
    /// <summary>SourceContext of proxy log events.</summary>
    public const string LogSourceContext = "Dispatch.Worker.Http.Proxy";

    internal static readonly TimeSpan PooledConnectionIdleTimeout = TimeSpan.FromSeconds(1);

    private static readonly byte[] UpgradeBody = Encoding.UTF8.GetBytes("Not Implemented: CONNECT is not proxied (WebSockets are)\n");
    private static readonly byte[] BadTargetBody = Encoding.UTF8.GetBytes("Bad Request: request target\n");

    private static readonly UriCreationOptions RawUri = new() { DangerousDisablePathAndQueryCanonicalization = true };

    private readonly Serilog.ILogger _log = log.ForContext(Constants.SourceContextPropertyName, LogSourceContext);
    private readonly Dictionary<(ProxyUpstream Upstream, TimeSpan ConnectTimeout), HttpMessageInvoker> _invokers = [];
    private readonly Lock _invokersLock = new();

    /// <summary>
    /// Checks a vhost's proxy settings (at start, with the other vhost checks) and returns its mappings, longest prefix
    /// first.
    /// </summary>
    /// <exception cref="ArgumentException">A prefix is not an absolute URL path or is mapped twice, or a prefix overlaps
    /// one of the vhost's CGI prefixes. (An upstream is a <see cref="ProxyUpstream"/>: parsed once, when the config was
    /// read, and again by the payload's converter; it cannot be anything but a Unix socket path or a loopback TCP port.)</exception>
    public static IReadOnlyList<ProxyPrefixRoute> NormalizeMappings(WorkerVhost vhost)
    {
        ArgumentNullException.ThrowIfNull(vhost);
        var routes = new List<ProxyPrefixRoute>();
        foreach (var mapping in vhost.Proxy)
        {
            ArgumentNullException.ThrowIfNull(mapping);
            ArgumentNullException.ThrowIfNull(mapping.Upstream);
            if (!ProxyPrefix.TryNormalize(mapping.UrlPrefix, out var prefix, out var prefixProblem))
            {
                throw new ArgumentException($"Proxy prefix of vhost '{vhost.Name}' is refused: {prefixProblem}.", nameof(vhost));
            }

            routes.Add(new ProxyPrefixRoute(prefix, mapping.Upstream, mapping.EffectiveConnectTimeout(), mapping.EffectiveReadTimeout()));
        }

        if (routes.Select(r => r.Prefix).Distinct(StringComparer.Ordinal).Count() != routes.Count)
        {
            throw new ArgumentException($"Vhost '{vhost.Name}' maps the same proxy prefix twice.", nameof(vhost));
        }

        if (vhost.Cgi.Count > 0)
        {
            foreach (var cgi in CgiHandler.NormalizeMappings(vhost.Name, vhost.Cgi))
            {
                foreach (var route in routes)
                {
                    if (route.Prefix.StartsWith(cgi.UrlPrefix, StringComparison.Ordinal) || cgi.UrlPrefix.StartsWith(route.Prefix, StringComparison.Ordinal))
                    {
                        throw new ArgumentException(
                            $"Proxy prefix '{route.Prefix}' of vhost '{vhost.Name}' overlaps its CGI prefix '{cgi.UrlPrefix}'.", nameof(vhost));
                    }
                }
            }
        }

        return [.. routes.OrderByDescending(r => r.Prefix.Length)];
    }

    /// <summary>The vhost's proxy middleware, placed before static files.</summary>
    public Func<RequestDelegate, RequestDelegate> Middleware(Vhost vhost, IHttpForwarder forwarder)
    {
        ArgumentNullException.ThrowIfNull(vhost);
        ArgumentNullException.ThrowIfNull(forwarder);
        var routes = NormalizeMappings(vhost.Settings)
            .Select(route => new Forwarding(
                route,
                InvokerFor(route.Upstream, route.ConnectTimeout),
                route.Upstream.IsUnixSocket ? "http://localhost" : "http://" + route.Upstream.CreateEndPoint(),
                new ForwarderRequestConfig
                {
                    ActivityTimeout = route.ReadTimeout,
                    Version = HttpVersion.Version11,
                    VersionPolicy = HttpVersionPolicy.RequestVersionExact,
                    AllowResponseBuffering = false,
                }))
            .ToArray();
        return next => context =>
        {
            var path = context.Request.Path.Value ?? string.Empty;
            foreach (var forwarding in routes)
            {
                if (forwarding.Route.Matches(path))
                {
                    return HandleAsync(context, vhost, forwarding, forwarder);
                }
            }

            return next(context);
        };
    }

    public void Dispose()
    {
        lock (_invokersLock)
        {
            foreach (var invoker in _invokers.Values)
            {
                invoker.Dispose();
            }

            _invokers.Clear();
        }
    }

    /// <summary>The request target in origin-form (path and query as sent), or <see langword="null"/>.</summary>
    internal static string? OriginForm(string? rawTarget)
    {
        if (string.IsNullOrEmpty(rawTarget))
        {
            return null;
        }

        if (rawTarget[0] == '/')
        {
            return rawTarget;
        }

        // Absolute-form (RFC 9112, 3.2.2): the authority is the Host; the upstream gets the rest.
        var scheme = rawTarget.IndexOf("://", StringComparison.Ordinal);
        if (scheme <= 0)
        {
            return null; // asterisk-form, authority-form
        }

        var rest = rawTarget.AsSpan(scheme + 3);
        var start = rest.IndexOfAny('/', '?');
        return start < 0 ? "/" : rest[start] == '?' ? string.Concat("/", rest[start..]) : rest[start..].ToString();
    }

    /// <summary>Connects to the upstream within <paramref name="timeout"/>; failures are <see cref="UpstreamConnectException"/>.</summary>
    internal static async ValueTask<Stream> ConnectAsync(ProxyUpstream upstream, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var endPoint = upstream.CreateEndPoint();
        if (endPoint is IPEndPoint { Address: var address } && !IPAddress.IsLoopback(address))
        {
            // Unreachable through TryParse; kept next to the connect so the policy holds whatever builds an upstream.
            throw new UpstreamConnectException(ConnectFailure.Denied, $"{address} is not a loopback address", null);
        }

        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        var retryDelay = TimeSpan.FromMilliseconds(5);
        while (true)
        {
            var socket = endPoint is UnixDomainSocketEndPoint
                ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
                : new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(endPoint, deadline.Token).ConfigureAwait(false);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.TryAgain or SocketError.WouldBlock)
            {
                // A Unix socket whose listen backlog is full refuses a non-blocking connect with EAGAIN (TCP would
                // wait): an application busy for a moment, not down. Retried until the connect timeout.
                socket.Dispose();
                try
                {
                    await Task.Delay(retryDelay, deadline.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new UpstreamConnectException(ConnectFailure.Timeout, $"listen backlog still full after {timeout.TotalSeconds:0.###} s", e);
                }

                retryDelay = TimeSpan.FromTicks(Math.Min(retryDelay.Ticks * 2, TimeSpan.FromMilliseconds(100).Ticks));
            }
            catch (SocketException e)
            {
                socket.Dispose();
                var failure = e.SocketErrorCode switch
                {
                    SocketError.ConnectionRefused => ConnectFailure.Refused,
                    SocketError.AddressNotAvailable when endPoint is UnixDomainSocketEndPoint => ConnectFailure.Missing,
                    SocketError.AccessDenied => ConnectFailure.Denied,
                    _ => ConnectFailure.Unavailable,
                };
                var reason = failure switch
                {
                    ConnectFailure.Refused => "nothing is listening (connection refused)",
                    ConnectFailure.Missing => "no socket at that path",
                    ConnectFailure.Denied => "permission denied (the worker's uid needs write permission on a Unix socket and "
                        + "search permission on its directories; a TCP port needs a Landlock connect rule)",
                    _ => $"{e.Message} ({e.SocketErrorCode})",
                };
                throw new UpstreamConnectException(failure, reason, e);
            }
            catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
            {
                socket.Dispose();
                throw new UpstreamConnectException(ConnectFailure.Timeout, $"no connection within {timeout.TotalSeconds:0.###} s", e);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }
    }

    /// <summary>CONNECT, or an extended CONNECT for anything but a WebSocket: not proxied.</summary>
    private static bool IsUnsupportedConnect(HttpContext context)
    {
        if (context.Features.Get<IHttpExtendedConnectFeature>() is { IsExtendedConnect: true } connect)
        {
            return !string.Equals(connect.Protocol, "websocket", StringComparison.OrdinalIgnoreCase);
        }

        return HttpMethods.IsConnect(context.Request.Method);
    }

    private static async Task WriteErrorAsync(HttpContext context, int status, byte[] body, bool close)
    {
        var response = context.Response;
        if (response.HasStarted)
        {
            context.Abort();
            return;
        }

        response.Clear();
        response.Headers.XContentTypeOptions = "nosniff";
        await RequestHandler.WriteTextAsync(context, status, body, close);
    }

    /// <summary>The first exception of type <typeparamref name="T"/> in <paramref name="e"/> and its inner ones.</summary>
    private static T? Find<T>(Exception? e)
        where T : Exception
    {
        for (var inner = e; inner is not null; inner = inner.InnerException)
        {
            if (inner is T found)
            {
                return found;
            }

            if (inner is AggregateException aggregate)
            {
                foreach (var each in aggregate.InnerExceptions)
                {
                    if (Find<T>(each) is { } nested)
                    {
                        return nested;
                    }
                }
            }
        }

        return null;
    }

    private static string Describe(Exception? e) =>
        e is null ? "no detail" : e.InnerException is { } cause && cause.Message != e.Message ? $"{e.Message} ({Describe(cause)})" : e.Message;

    private HttpMessageInvoker InvokerFor(ProxyUpstream upstream, TimeSpan connectTimeout)
    {
        lock (_invokersLock)
        {
            if (_invokers.TryGetValue((upstream, connectTimeout), out var existing))
            {
                return existing;
            }

            var handler = new SocketsHttpHandler
            {
                UseProxy = false,
                Proxy = null,
                AllowAutoRedirect = false,
                UseCookies = false,
                AutomaticDecompression = DecompressionMethods.None,
                ActivityHeadersPropagator = null,
                PooledConnectionIdleTimeout = PooledConnectionIdleTimeout,

                // A response the client no longer wants is not drained for reuse: the connection is closed, so the
                // application sees its request aborted at once.
                MaxResponseDrainSize = 0,

                // The request's URI is ignored: the connection goes to this upstream, which TryParse allowed.
                ConnectCallback = (_, cancellationToken) => ConnectAsync(upstream, connectTimeout, cancellationToken),
            };
            var invoker = new HttpMessageInvoker(handler, disposeHandler: true);
            _invokers[(upstream, connectTimeout)] = invoker;
            return invoker;
        }
    }

    private async Task HandleAsync(HttpContext context, Vhost vhost, Forwarding forwarding, IHttpForwarder forwarder)
    {
        if (IsUnsupportedConnect(context))
        {
            // Only into the vhost's own error log: the worker's log has not carried client behaviour like this.
            if (vhost.ErrorLog is { } errorLog)
            {
                RequestErrors.For(vhost, context, errorLog).Information(
                    "Proxy of {Vhost}: CONNECT ({Protocol}) answered 501: not supported", vhost.Name, context.Features.Get<IHttpExtendedConnectFeature>()?.Protocol);
            }

            await RequestHandler.WriteTextAsync(context, StatusCodes.Status501NotImplemented, UpgradeBody, close: false);
            return;
        }

        var target = OriginForm(context.Features.Get<IHttpRequestFeature>()?.RawTarget);
        if (target is null || !Uri.TryCreate(forwarding.BaseUri + target, in RawUri, out _))
        {
            await RequestHandler.WriteTextAsync(context, StatusCodes.Status400BadRequest, BadTargetBody, close: true);
            return;
        }

        context.Items[ProxyTransformer.TargetKey] = target;

        // A half-closed client (FIN after its request) counts as gone for a proxied request, as in nginx.
        using var clientLeft = HalfCloseConnectionContext.AbortOnInputEnd(context);
        var error = await forwarder.SendAsync(context, forwarding.BaseUri, forwarding.Invoker, forwarding.Config, ProxyTransformer.Instance);
        if (context.Items[ProxyTransformer.DroppedFieldsKey] is List<string> dropped)
        {
            Warn(context, vhost, forwarding, "response fields {Fields} dropped: values with non-ASCII or control characters", string.Join(", ", dropped), null);
        }

        if (error != ForwarderError.None)
        {
            await FailAsync(context, vhost, forwarding, error, context.Features.Get<IForwarderErrorFeature>()?.Exception);
        }
    }

    /// <summary>Turns a failed exchange into the client's answer and one log line (none for a client that left).</summary>
    private async Task FailAsync(HttpContext context, Vhost vhost, Forwarding forwarding, ForwarderError error, Exception? exception)
    {
        switch (error)
        {
            case ForwarderError.RequestCanceled or ForwarderError.RequestBodyCanceled or ForwarderError.ResponseBodyCanceled
                or ForwarderError.ResponseBodyClient or ForwarderError.UpgradeRequestCanceled or ForwarderError.UpgradeResponseCanceled
                or ForwarderError.UpgradeRequestClient or ForwarderError.UpgradeResponseClient when context.Response.HasStarted || context.RequestAborted.IsCancellationRequested:
                return; // the client left (or closed its WebSocket); cancelling closed the upstream connection

            case ForwarderError.RequestBodyClient:
                // The client's body was refused (too large, malformed): its error, not the application's.
                if (Find<BadHttpRequestException>(exception) is { } bad && !context.Response.HasStarted)
                {
                    await WriteErrorAsync(context, bad.StatusCode, Encoding.UTF8.GetBytes(bad.Message + "\n"), close: true);
                }
                else
                {
                    context.Abort(); // reading the client's body failed: the client is going or gone
                }

                return;

            case ForwarderError.Request or ForwarderError.RequestCreation when Find<UpstreamConnectException>(exception) is { } connect:
                var (status, body) = GatewayAnswers.ForConnect(connect.Failure);
                Warn(context, vhost, forwarding, "cannot connect, {Failure}: {Reason}", connect.Failure, connect.Message);
                await WriteErrorAsync(context, status, body, close: false);
                return;

            case ForwarderError.RequestTimedOut:
                Warn(context, vhost, forwarding, "no response headers within {Timeout} s (readTimeout)", forwarding.Route.ReadTimeout.TotalSeconds, null);
                await WriteErrorAsync(context, StatusCodes.Status504GatewayTimeout, GatewayAnswers.ReadTimeout, close: false);
                return;

            case ForwarderError.ResponseBodyDestination when context.Response.HasStarted:
                // YARP has aborted the client's connection (or reset its HTTP/2 stream).
                Warn(context, vhost, forwarding, "the response broke off mid-body ({Reason}): connection aborted", Describe(exception), null);
                return;

            case ForwarderError.UpgradeActivityTimeout:
                Info(context, vhost, forwarding, "upgraded connection closed after {Timeout} s without traffic (readTimeout)", forwarding.Route.ReadTimeout.TotalSeconds);
                return;

            case ForwarderError.UpgradeRequestDestination or ForwarderError.UpgradeResponseDestination when context.Response.HasStarted:
                Info(context, vhost, forwarding, "upgraded connection ended by the application: {Reason}", Describe(exception));
                return;

            default:
                if (context.Response.HasStarted)
                {
                    Warn(context, vhost, forwarding, "{Error}: {Reason}; connection aborted", error, Describe(exception));
                    context.Abort();
                    return;
                }

                var timedOut = context.Response.StatusCode == StatusCodes.Status504GatewayTimeout;
                Warn(context, vhost, forwarding, "{Error}: {Reason}", error, Describe(exception));
                await WriteErrorAsync(
                    context,
                    timedOut ? StatusCodes.Status504GatewayTimeout : StatusCodes.Status502BadGateway,
                    timedOut ? GatewayAnswers.ReadTimeout : GatewayAnswers.InvalidResponse,
                    close: false);
                return;
        }
    }

    private void Warn(HttpContext context, Vhost vhost, Forwarding forwarding, string problemTemplate, object? first, object? second) =>
        RequestErrors.For(vhost, context, _log).Warning(
            "Proxy of {Vhost} to {Upstream} for {Method} {Path}: " + problemTemplate,
            vhost.Name,
            forwarding.Route.Upstream.ToString(),
            context.Request.Method,
            context.Request.Path.Value,
            first,
            second);

    private void Info(HttpContext context, Vhost vhost, Forwarding forwarding, string problemTemplate, object? first) =>
        RequestErrors.For(vhost, context, _log).Information(
            "Proxy of {Vhost} to {Upstream} for {Method} {Path}: " + problemTemplate,
            vhost.Name,
            forwarding.Route.Upstream.ToString(),
            context.Request.Method,
            context.Request.Path.Value,
            first);

    /// <summary>One proxied prefix, ready: its invoker, the base URI of its requests and YARP's settings.</summary>
    private sealed record Forwarding(ProxyPrefixRoute Route, HttpMessageInvoker Invoker, string BaseUri, ForwarderRequestConfig Config);
}
