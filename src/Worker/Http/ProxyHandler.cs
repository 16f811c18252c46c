using System.Buffers;
using System.Collections.Frozen;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;
using Serilog.Core;
using HeaderStringValues = System.Net.Http.Headers.HeaderStringValues;

namespace Dispatch.Worker.Http;

/// <summary>
/// Reverse proxy to the tenant's own application (<see cref="ProxySettings"/>); one instance per worker, shared by its
/// vhosts, holding one pooled <see cref="HttpClient"/> per upstream.
/// </summary>
/// <remarks>
/// <para><b>Upstream.</b> HTTP/1.1 over a Unix socket (<c>unix:/path</c>) or a loopback TCP port (<c>127.0.0.1</c>,
/// <c>[::1]</c>): anything else is refused at start, so a tenant's configuration cannot make its worker a relay into
/// the network. Connections are made by our own connect callback (no name resolution, no proxy, no environment
/// variables), pooled, and dropped after <see cref="PooledConnectionIdleTimeout"/> idle — shorter than the keep-alive
/// timeout of common application servers (gunicorn 2 s, Node 5 s), so a request is not sent on a connection the
/// application is closing at that moment. No redirects followed, no cookies kept, no decompression, no trace headers
/// added.</para>
/// <para><b>Request.</b> Method, request target exactly as the client sent it (<see cref="IHttpRequestFeature.RawTarget"/>,
/// absolute-form reduced to origin-form; no re-encoding, no dot-segment removal — the prefix is matched on Kestrel's
/// decoded, normalised path, while the application gets the raw target, as with nginx's <c>proxy_pass</c> without a
/// URI), Host as the client sent it, the other fields except hop-by-hop ones (<see cref="HopByHop"/> and any named in
/// Connection), Expect (Kestrel answers 100-continue itself when the body is first read) and Proxy (httpoxy).
/// X-Forwarded-For gets the client address appended; X-Forwarded-Proto (<c>https</c> when the client's connection was
/// TLS, terminated by the dispatcher or by this worker) and X-Forwarded-Host (the request's Host) replace whatever the
/// client sent. The body is streamed as it arrives (Content-Length kept, chunked otherwise), never buffered whole.</para>
/// <para><b>Response.</b> Status, reason phrase and fields except hop-by-hop ones (and values Kestrel cannot send:
/// non-ASCII or control characters, logged); the body streamed back as it comes, headers sent at once; trailers passed
/// on where the client's protocol carries them.</para>
/// <para><b>Errors</b> (each logged once at Warning with vhost and upstream, to the vhost's error log when it has one:
/// <see cref="RequestErrors"/>): connection refused, socket missing or not
/// permitted: 502; no connection within <see cref="ProxySettings.ConnectTimeout"/>: 504; no response headers within
/// <see cref="ProxySettings.ResponseTimeout"/> after the request or the last body chunk was passed on: 504; an invalid
/// or missing response: 502; the response breaking off mid-body: the client connection is aborted (a truncated body is
/// never passed off as complete). A client that leaves cancels the upstream request (its connection is closed, not
/// drained).</para>
/// <para><b>Not supported.</b> Connection upgrades (WebSocket over HTTP/1.1 <c>Upgrade</c>, HTTP/2 extended CONNECT)
/// and CONNECT get 501: passing an upgraded connection on needs an opaque two-way pump this handler does not have yet.
/// <c>Upgrade: h2c</c> alone is ignored, as a server may. The request body is bounded by the vhost's
/// <c>maxBodySize</c> (32 MiB by default; 413 beyond it, see <see cref="VhostFeatures"/>).</para>
/// </remarks>
internal sealed class ProxyHandler(Serilog.ILogger log) : IDisposable
{
    /// <summary>SourceContext of proxy log events.</summary>
    public const string LogSourceContext = "Dispatch.Worker.Http.Proxy";

    internal static readonly TimeSpan PooledConnectionIdleTimeout = TimeSpan.FromSeconds(1);

    private const int BufferSize = 64 * 1024;
    private const string XForwardedFor = "X-Forwarded-For";
    private const string XForwardedProto = "X-Forwarded-Proto";
    private const string XForwardedHost = "X-Forwarded-Host";

    /// <summary>Connection-specific fields (RFC 9110, 7.6.1), never forwarded either way.</summary>
    internal static readonly FrozenSet<string> HopByHop = new[]
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
    }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    private static readonly UriCreationOptions RawUri = new() { DangerousDisablePathAndQueryCanonicalization = true };

    private static readonly byte[] UpgradeBody = Encoding.UTF8.GetBytes("Not Implemented: connection upgrades (WebSocket) are not proxied\n");
    private static readonly byte[] BadTargetBody = Encoding.UTF8.GetBytes("Bad Request: request target\n");
    private static readonly byte[] RefusedBody = Encoding.UTF8.GetBytes("Bad Gateway: the application is unavailable (connection refused)\n");
    private static readonly byte[] MissingBody = Encoding.UTF8.GetBytes("Bad Gateway: the application is unavailable (not running)\n");
    private static readonly byte[] DeniedBody = Encoding.UTF8.GetBytes("Bad Gateway: the application is unavailable (connection not permitted)\n");
    private static readonly byte[] UnavailableBody = Encoding.UTF8.GetBytes("Bad Gateway: the application is unavailable\n");
    private static readonly byte[] InvalidResponseBody = Encoding.UTF8.GetBytes("Bad Gateway: the application sent no valid response\n");
    private static readonly byte[] ConnectTimeoutBody = Encoding.UTF8.GetBytes("Gateway Timeout: the application did not accept the connection in time\n");
    private static readonly byte[] ResponseTimeoutBody = Encoding.UTF8.GetBytes("Gateway Timeout: the application did not answer in time\n");

    private readonly Serilog.ILogger _log = log.ForContext(Constants.SourceContextPropertyName, LogSourceContext);
    private readonly Dictionary<(ProxyUpstream Upstream, TimeSpan ConnectTimeout), HttpClient> _clients = [];
    private readonly Lock _clientsLock = new();

    /// <summary>
    /// Checks a vhost's proxy settings (at start, with the other vhost checks) and returns its mappings, longest prefix
    /// first.
    /// </summary>
    /// <exception cref="ArgumentException">A prefix is not an absolute URL path or is mapped twice, an upstream is not a
    /// Unix socket path or a loopback TCP port, or a prefix overlaps one of the vhost's CGI prefixes.</exception>
    public static IReadOnlyList<ProxyRoute> NormalizeMappings(VhostSettings vhost)
    {
        ArgumentNullException.ThrowIfNull(vhost);
        var routes = new List<ProxyRoute>();
        foreach (var mapping in vhost.Proxy?.Mappings ?? [])
        {
            ArgumentNullException.ThrowIfNull(mapping);
            var prefix = mapping.UrlPrefix;
            if (!IsAcceptablePrefix(prefix))
            {
                throw new ArgumentException($"Proxy prefix '{prefix}' of vhost '{vhost.Name}' is not an absolute URL path.", nameof(vhost));
            }

            if (!ProxyUpstream.TryParse(mapping.Upstream, out var upstream, out var problem))
            {
                throw new ArgumentException(
                    $"Proxy upstream '{mapping.Upstream}' of vhost '{vhost.Name}' is refused: {problem}. "
                    + "Use 'unix:/absolute/path.sock', 'http://127.0.0.1:PORT' or 'http://[::1]:PORT'.",
                    nameof(vhost));
            }

            routes.Add(new ProxyRoute(prefix.EndsWith('/') ? prefix : prefix + "/", upstream));
        }

        if (routes.Select(r => r.Prefix).Distinct(StringComparer.Ordinal).Count() != routes.Count)
        {
            throw new ArgumentException($"Vhost '{vhost.Name}' maps the same proxy prefix twice.", nameof(vhost));
        }

        if (vhost.Cgi is not null)
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
    public Func<RequestDelegate, RequestDelegate> Middleware(Vhost vhost, ProxySettings settings)
    {
        ArgumentNullException.ThrowIfNull(vhost);
        ArgumentNullException.ThrowIfNull(settings);
        var routes = NormalizeMappings(vhost.Settings)
            .Select(route => (Route: route, Client: ClientFor(route.Upstream, settings.EffectiveConnectTimeout)))
            .ToArray();
        return next => context =>
        {
            var path = context.Request.Path.Value ?? string.Empty;
            foreach (var (route, client) in routes)
            {
                if (route.Matches(path))
                {
                    return HandleAsync(context, vhost, settings, route, client);
                }
            }

            return next(context);
        };
    }

    public void Dispose()
    {
        lock (_clientsLock)
        {
            foreach (var client in _clients.Values)
            {
                client.Dispose();
            }

            _clients.Clear();
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
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        var retryDelay = TimeSpan.FromMilliseconds(5);
        while (true)
        {
            var socket = upstream.EndPoint is UnixDomainSocketEndPoint
                ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
                : new Socket(upstream.EndPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(upstream.EndPoint, deadline.Token).ConfigureAwait(false);
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
                    SocketError.AddressNotAvailable when upstream.EndPoint is UnixDomainSocketEndPoint => ConnectFailure.Missing,
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

    private static bool IsAcceptablePrefix(string? prefix)
    {
        if (string.IsNullOrEmpty(prefix) || prefix[0] != '/')
        {
            return false;
        }

        foreach (var range in prefix.AsSpan().Split('/'))
        {
            var segment = prefix.AsSpan()[range];
            if (segment is "." or "..")
            {
                return false;
            }
        }

        foreach (var c in prefix)
        {
            if (c <= 0x20 || c == 0x7f || c is '\\' or '%' or '?' or '#')
            {
                return false;
            }
        }

        return !prefix.Contains("//", StringComparison.Ordinal);
    }

    /// <summary>
    /// Upgrades are not proxied yet: an upgraded connection is an opaque two-way byte stream, which needs a pump between
    /// the client and a dedicated upstream connection (and a WebSocket-aware timeout policy) that this handler does not
    /// have. A request asking for one gets 501 rather than a silently downgraded answer. <c>Upgrade: h2c</c> alone may
    /// be ignored by a server (RFC 9113, 3.1) and is.
    /// </summary>
    private static bool IsUnsupportedUpgrade(HttpContext context)
    {
        if (HttpMethods.IsConnect(context.Request.Method)
            || context.Features.Get<IHttpExtendedConnectFeature>()?.IsExtendedConnect == true)
        {
            return true;
        }

        foreach (var value in context.Request.Headers.Upgrade)
        {
            foreach (var range in (value ?? string.Empty).AsSpan().Split(','))
            {
                var token = (value ?? string.Empty).AsSpan()[range].Trim();
                if (!token.IsEmpty && !token.Equals("h2c", StringComparison.OrdinalIgnoreCase))
                {
                    return true;
                }
            }
        }

        return false;
    }

    private static HashSet<string> ConnectionTokens(IEnumerable<string?> values)
    {
        var tokens = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var value in values)
        {
            foreach (var token in (value ?? string.Empty).Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                tokens.Add(token);
            }
        }

        return tokens;
    }

    private HttpClient ClientFor(ProxyUpstream upstream, TimeSpan connectTimeout)
    {
        lock (_clientsLock)
        {
            if (_clients.TryGetValue((upstream, connectTimeout), out var existing))
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
                ConnectCallback = (_, cancellationToken) => ConnectAsync(upstream, connectTimeout, cancellationToken),
            };
            var client = new HttpClient(handler, disposeHandler: true)
            {
                Timeout = Timeout.InfiniteTimeSpan,
                DefaultRequestVersion = HttpVersion.Version11,
                DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            _clients[(upstream, connectTimeout)] = client;
            return client;
        }
    }

    private async Task HandleAsync(HttpContext context, Vhost vhost, ProxySettings settings, ProxyRoute route, HttpClient client)
    {
        if (IsUnsupportedUpgrade(context))
        {
            // Only into the vhost's own error log: the worker's log has not carried client behaviour like this.
            if (vhost.ErrorLog is { } errorLog)
            {
                RequestErrors.For(vhost, context, errorLog).Information(
                    "Proxy of {Vhost}: a connection upgrade ({Upgrade}) answered 501: not supported", vhost.Name, context.Request.Headers.Upgrade.ToString());
            }

            await RequestHandler.WriteTextAsync(context, StatusCodes.Status501NotImplemented, UpgradeBody, close: false);
            return;
        }

        var target = OriginForm(context.Features.Get<IHttpRequestFeature>()?.RawTarget);
        if (target is null || !Uri.TryCreate(route.Upstream.BaseUri + target, in RawUri, out var uri))
        {
            await RequestHandler.WriteTextAsync(context, StatusCodes.Status400BadRequest, BadTargetBody, close: true);
            return;
        }

        using var exchange = new Exchange(this, context, vhost, route, settings);
        await exchange.RunAsync(client, uri);
    }

    /// <summary>One proxied request: sends it, turns the answer (or the failure) into the response, and cleans up.</summary>
    private sealed class Exchange(ProxyHandler owner, HttpContext context, Vhost vhost, ProxyRoute route, ProxySettings settings) : IDisposable
    {
        private readonly CancellationTokenSource _headerTimer = new();
        private readonly CancellationTokenSource _stopBody = new();
        private readonly TaskCompletionSource _bodyDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly Lock _timerLock = new();
        private bool _headersReceived;
        private int _bodyStarted;
        private Exception? _clientBodyError;
        private CancellationTokenSource? _send;

        private HttpContext Context => context;

        public async Task RunAsync(HttpClient client, Uri uri)
        {
            try
            {
                await RunCoreAsync(client, uri);
            }
            finally
            {
                // The body may still be flowing (the application answered before reading it all): stop it before the
                // request's body stream goes away with the request.
                await _stopBody.CancelAsync();
                if (Volatile.Read(ref _bodyStarted) != 0)
                {
                    await _bodyDone.Task;
                }
            }
        }

        public void Dispose()
        {
            _send?.Dispose();
            _headerTimer.Dispose();
            _stopBody.Dispose();
        }

        private async Task RunCoreAsync(HttpClient client, Uri uri)
        {
            var aborted = context.RequestAborted;
            using var request = new HttpRequestMessage(new HttpMethod(context.Request.Method), uri)
            {
                Version = HttpVersion.Version11,
                VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            };
            var canHaveBody = context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? true;
            if (canHaveBody)
            {
                request.Content = new ClientBodyContent(this);
                request.Content.Headers.ContentLength = context.Request.ContentLength;
            }
            else if (context.Request.ContentLength == 0)
            {
                // "Content-Length: 0" sent explicitly: an empty body, whose Content-Type and such are kept.
                request.Content = new ByteArrayContent([]);
            }

            CopyRequestHeaders(request);

            // Disposed with the exchange, not here: the body upload may still be using the token.
            _send = CancellationTokenSource.CreateLinkedTokenSource(aborted, _headerTimer.Token);
            HttpResponseMessage response;
            ArmHeaderTimer();
            try
            {
                response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, _send.Token);
            }
            catch (Exception e)
            {
                await FailBeforeResponseAsync(e);
                return;
            }
            finally
            {
                lock (_timerLock)
                {
                    _headersReceived = true;
                    _headerTimer.CancelAfter(Timeout.InfiniteTimeSpan);
                }
            }

            using (response)
            {
                await ServeResponseAsync(response, aborted);
            }
        }

        private void CopyRequestHeaders(HttpRequestMessage request)
        {
            var headers = context.Request.Headers;
            var connectionTokens = ConnectionTokens(headers.Connection);
            foreach (var (name, values) in headers)
            {
                if (name.Length == 0
                    || name[0] == ':'
                    || HopByHop.Contains(name)
                    || connectionTokens.Contains(name)
                    || name.Equals(HeaderNames.Host, StringComparison.OrdinalIgnoreCase)
                    || name.Equals(HeaderNames.ContentLength, StringComparison.OrdinalIgnoreCase)
                    || name.Equals(HeaderNames.Expect, StringComparison.OrdinalIgnoreCase)
                    || name.Equals("Proxy", StringComparison.OrdinalIgnoreCase)
                    || name.Equals(XForwardedFor, StringComparison.OrdinalIgnoreCase)
                    || name.Equals(XForwardedProto, StringComparison.OrdinalIgnoreCase)
                    || name.Equals(XForwardedHost, StringComparison.OrdinalIgnoreCase))
                {
                    continue;
                }

                var value = values.Count == 1
                    ? values[0] ?? string.Empty
                    : string.Join(name.Equals(HeaderNames.Cookie, StringComparison.OrdinalIgnoreCase) ? "; " : ", ", values.ToArray());
                if (!request.Headers.TryAddWithoutValidation(name, value))
                {
                    // A content field (Content-Type, Content-Encoding…): kept when there is a body to describe.
                    request.Content?.Headers.TryAddWithoutValidation(name, value);
                }
            }

            string host = headers.Host.ToString();
            request.Headers.TryAddWithoutValidation(HeaderNames.Host, host);

            var remote = context.Connection.RemoteIpAddress is { IsIPv4MappedToIPv6: true } mapped
                ? mapped.MapToIPv4()
                : context.Connection.RemoteIpAddress;
            var forwardedFor = string.Join(", ", headers[XForwardedFor].Where(v => !string.IsNullOrWhiteSpace(v)).ToArray());
            if (remote is not null)
            {
                forwardedFor = forwardedFor.Length == 0 ? remote.ToString() : forwardedFor + ", " + remote;
            }

            if (forwardedFor.Length > 0)
            {
                request.Headers.TryAddWithoutValidation(XForwardedFor, forwardedFor);
            }

            request.Headers.TryAddWithoutValidation(XForwardedProto, context.Request.IsHttps ? "https" : "http");
            request.Headers.TryAddWithoutValidation(XForwardedHost, host);
        }

        private async Task ServeResponseAsync(HttpResponseMessage upstream, CancellationToken aborted)
        {
            var status = (int)upstream.StatusCode;
            if (status < 200)
            {
                // 101 without an Upgrade asked for, or another interim status passed up as final: not HTTP we can relay.
                await BadGatewayAsync(InvalidResponseBody, $"interim status {status} as the final response");
                return;
            }

            ApplyResponseHead(upstream, status);
            var sendBody = !HttpMethods.IsHead(context.Request.Method) && status is not (StatusCodes.Status204NoContent or StatusCodes.Status304NotModified);
            var response = context.Response;
            long forwarded = 0;
            var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
            try
            {
                Stream body;
                try
                {
                    // Let the client see the status now, whatever the application does next.
                    await response.StartAsync(aborted);
                    await response.Body.FlushAsync(aborted);
                    body = await upstream.Content.ReadAsStreamAsync(aborted);
                }
                catch (Exception e) when (e is IOException || (e is OperationCanceledException && aborted.IsCancellationRequested))
                {
                    return; // the client is gone
                }

                await using (body)
                {
                    while (true)
                    {
                        int n;
                        try
                        {
                            n = await body.ReadAsync(buffer.AsMemory(0, BufferSize), aborted);
                        }
                        catch (OperationCanceledException) when (aborted.IsCancellationRequested)
                        {
                            return; // the client is gone; disposing the response closes the upstream connection
                        }
                        catch (Exception e) when (e is IOException or HttpRequestException or ObjectDisposedException)
                        {
                            Warn("the response broke off after {Bytes} body bytes ({Reason}): connection aborted", forwarded, e.Message);
                            context.Abort();
                            return;
                        }

                        if (n == 0)
                        {
                            break;
                        }

                        if (!sendBody)
                        {
                            continue;
                        }

                        try
                        {
                            await response.Body.WriteAsync(buffer.AsMemory(0, n), aborted);
                        }
                        catch (Exception e) when (e is IOException || (e is OperationCanceledException && aborted.IsCancellationRequested))
                        {
                            return; // the client is gone
                        }

                        forwarded += n;
                    }
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }

            if (upstream.TrailingHeaders.Any() && response.SupportsTrailers())
            {
                foreach (var (name, values) in upstream.TrailingHeaders.NonValidated)
                {
                    if (!HopByHop.Contains(name) && AreSendable(values))
                    {
                        response.AppendTrailer(name, ToStringValues(values));
                    }
                }
            }
        }

        private void ApplyResponseHead(HttpResponseMessage upstream, int status)
        {
            var response = context.Response;
            response.StatusCode = status;
            if (upstream.ReasonPhrase is { Length: > 0 } reason
                && AreSendable([reason])
                && context.Features.Get<IHttpResponseFeature>() is { } feature)
            {
                feature.ReasonPhrase = reason;
            }

            var connectionTokens = upstream.Headers.NonValidated.TryGetValues(HeaderNames.Connection, out var connection)
                ? ConnectionTokens(connection)
                : [];
            var dropped = new List<string>();
            foreach (var (name, values) in upstream.Headers.NonValidated.Concat(upstream.Content.Headers.NonValidated))
            {
                if (HopByHop.Contains(name)
                    || connectionTokens.Contains(name)
                    || name.Equals(HeaderNames.ContentLength, StringComparison.OrdinalIgnoreCase))
                {
                    continue;
                }

                if (!AreSendable(values))
                {
                    dropped.Add(name);
                    continue;
                }

                response.Headers[name] = ToStringValues(values); // replaces a default of ours (X-Content-Type-Options)
            }

            if (upstream.Content.Headers.ContentLength is { } length && status != StatusCodes.Status204NoContent)
            {
                response.ContentLength = length;
            }

            if (dropped.Count > 0)
            {
                Warn("response fields {Fields} dropped: values with non-ASCII or control characters", string.Join(", ", dropped), null);
            }
        }

        private static StringValues ToStringValues(HeaderStringValues values) =>
            values.Count == 1 ? new StringValues(values.ToString()) : new StringValues(values.ToArray());

        private static bool AreSendable(IEnumerable<string> values)
        {
            foreach (var value in values)
            {
                foreach (var c in value)
                {
                    if ((c < 0x20 && c != '\t') || c >= 0x7f)
                    {
                        return false;
                    }
                }
            }

            return true;
        }

        private async Task FailBeforeResponseAsync(Exception e)
        {
            if (context.RequestAborted.IsCancellationRequested)
            {
                return; // the client left; cancelling the send closed the upstream connection
            }

            var bodyError = Volatile.Read(ref _clientBodyError);
            if (bodyError is BadHttpRequestException bad)
            {
                // The client's body was refused (too large, malformed): its error, not the application's.
                await RequestHandler.WriteTextAsync(context, bad.StatusCode, Encoding.UTF8.GetBytes(bad.Message + "\n"), close: true);
                return;
            }

            if (bodyError is not null)
            {
                context.Abort(); // reading the client's body failed: the client is going or gone
                return;
            }

            for (var inner = e; inner is not null; inner = inner.InnerException)
            {
                if (inner is UpstreamConnectException connect)
                {
                    var (statusCode, body) = connect.Failure switch
                    {
                        ConnectFailure.Timeout => (StatusCodes.Status504GatewayTimeout, ConnectTimeoutBody),
                        ConnectFailure.Refused => (StatusCodes.Status502BadGateway, RefusedBody),
                        ConnectFailure.Missing => (StatusCodes.Status502BadGateway, MissingBody),
                        ConnectFailure.Denied => (StatusCodes.Status502BadGateway, DeniedBody),
                        _ => (StatusCodes.Status502BadGateway, UnavailableBody),
                    };
                    Warn("cannot connect, {Failure}: {Reason}", connect.Failure, connect.Message);
                    await RequestHandler.WriteTextAsync(context, statusCode, body, close: false);
                    return;
                }
            }

            if (e is OperationCanceledException && _headerTimer.IsCancellationRequested)
            {
                Warn("no response headers within {Timeout} s", settings.EffectiveResponseTimeout.TotalSeconds, null);
                await RequestHandler.WriteTextAsync(context, StatusCodes.Status504GatewayTimeout, ResponseTimeoutBody, close: false);
                return;
            }

            await BadGatewayAsync(InvalidResponseBody, e.InnerException is { } cause ? $"{e.Message} ({cause.Message})" : e.Message);
        }

        private async Task BadGatewayAsync(byte[] body, string reason)
        {
            Warn("{Reason}", reason, null);
            await RequestHandler.WriteTextAsync(context, StatusCodes.Status502BadGateway, body, close: false);
        }

        private void Warn(string problemTemplate, object? first, object? second) =>
            RequestErrors.For(vhost, context, owner._log).Warning(
                "Proxy of {Vhost} to {Upstream} for {Method} {Path}: " + problemTemplate,
                vhost.Name,
                route.Upstream.Text,
                context.Request.Method,
                context.Request.Path.Value,
                first,
                second);

        /// <summary>(Re)starts the wait for the response headers: at the send, and after each body chunk passed on.</summary>
        private void ArmHeaderTimer()
        {
            lock (_timerLock)
            {
                if (!_headersReceived)
                {
                    try
                    {
                        _headerTimer.CancelAfter(settings.EffectiveResponseTimeout);
                    }
                    catch (ObjectDisposedException)
                    {
                    }
                }
            }
        }

        /// <summary>The client's request body, copied to the upstream as it arrives.</summary>
        private sealed class ClientBodyContent(Exchange exchange) : HttpContent
        {
            protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
            {
                if (Interlocked.Exchange(ref exchange._bodyStarted, 1) != 0)
                {
                    throw new InvalidOperationException("The request body can be sent only once.");
                }

                var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
                try
                {
                    using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, exchange._stopBody.Token);
                    var body = exchange.Context.Request.Body;
                    while (true)
                    {
                        int n;
                        try
                        {
                            n = await body.ReadAsync(buffer.AsMemory(0, BufferSize), stop.Token);
                        }
                        catch (Exception e) when (e is not OperationCanceledException)
                        {
                            Volatile.Write(ref exchange._clientBodyError, e);
                            throw;
                        }

                        if (n == 0)
                        {
                            break;
                        }

                        await stream.WriteAsync(buffer.AsMemory(0, n), stop.Token);
                        await stream.FlushAsync(stop.Token);
                        exchange.ArmHeaderTimer();
                    }

                    exchange.ArmHeaderTimer();
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    exchange._bodyDone.TrySetResult();
                }
            }

            protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
                SerializeToStreamAsync(stream, context, CancellationToken.None);

            protected override bool TryComputeLength(out long length)
            {
                length = 0;
                return false;
            }
        }
    }
}

/// <summary>One proxied prefix of a vhost.</summary>
internal sealed record ProxyRoute(string Prefix, ProxyUpstream Upstream)
{
    /// <summary>Under the prefix, or the prefix without its trailing slash (<c>/app</c> for <c>/app/</c>).</summary>
    public bool Matches(string path) =>
        path.StartsWith(Prefix, StringComparison.Ordinal)
        || (path.Length == Prefix.Length - 1 && path.Length > 0 && Prefix.StartsWith(path, StringComparison.Ordinal));
}

/// <summary>A parsed upstream: a Unix socket path or a loopback TCP endpoint.</summary>
internal sealed record ProxyUpstream(string Text, EndPoint EndPoint, string BaseUri)
{
    public static bool TryParse(string? text, out ProxyUpstream upstream, out string problem)
    {
        upstream = null!;
        problem = string.Empty;
        if (string.IsNullOrEmpty(text))
        {
            problem = "it is empty";
            return false;
        }

        if (text.StartsWith("unix:", StringComparison.Ordinal))
        {
            var path = text["unix:".Length..];
            if (!path.StartsWith('/') || !Path.IsPathFullyQualified(path))
            {
                problem = "a Unix socket must be an absolute path (abstract sockets are not supported)";
                return false;
            }

            if (path.Contains('\0', StringComparison.Ordinal) || path.EndsWith('/'))
            {
                problem = "not a socket file path";
                return false;
            }

            if (Encoding.UTF8.GetByteCount(path) > 107) // sun_path is 108 bytes, NUL included
            {
                problem = "a Unix socket path is at most 107 bytes";
                return false;
            }

            upstream = new ProxyUpstream(text, new UnixDomainSocketEndPoint(path), "http://localhost");
            return true;
        }

        const string scheme = "http://";
        if (!text.StartsWith(scheme, StringComparison.OrdinalIgnoreCase))
        {
            problem = "only unix: and http:// upstreams are supported";
            return false;
        }

        var authority = text.AsSpan(scheme.Length);
        if (authority.EndsWith("/"))
        {
            authority = authority[..^1];
        }

        IPAddress address;
        ReadOnlySpan<char> port;
        if (authority.StartsWith("127.0.0.1:"))
        {
            address = IPAddress.Loopback;
            port = authority["127.0.0.1:".Length..];
        }
        else if (authority.StartsWith("[::1]:"))
        {
            address = IPAddress.IPv6Loopback;
            port = authority["[::1]:".Length..];
        }
        else
        {
            problem = "a TCP upstream must be 127.0.0.1 or [::1] with an explicit port, and nothing after it";
            return false;
        }

        if (!int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out var number) || number is < 1 or > 65535)
        {
            problem = $"'{port}' is not a port number (1-65535) followed by nothing";
            return false;
        }

        var endPoint = new IPEndPoint(address, number);
        upstream = new ProxyUpstream(text, endPoint, "http://" + endPoint);
        return true;
    }
}

internal enum ConnectFailure
{
    Refused,
    Missing,
    Denied,
    Timeout,
    Unavailable,
}

/// <summary>Connecting to the upstream failed (thrown by the connect callback, wrapped by the HTTP handler).</summary>
internal sealed class UpstreamConnectException(ConnectFailure failure, string message, Exception? inner) : IOException(message, inner)
{
    public ConnectFailure Failure { get; } = failure;
}
