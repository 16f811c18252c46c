using Dispatch.Wire.Payloads;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Extensions;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.StaticFiles;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;

namespace Dispatch.Worker.Http;

/// <summary>
/// A vhost's HTTP features at run time (docs/vhost-features.md), built once per vhost: the first middleware of its
/// pipeline sets the request body limit, the response headers, the canonical-host and path redirects; the custom error
/// pages are served by <see cref="RequestHandler.WriteTextAsync"/> (every error the worker writes itself goes through it);
/// precompressed siblings of static files by <see cref="PrecompressedMiddleware"/>. Set as a request feature, so the
/// handlers of the request find it without a lookup.
/// </summary>
internal sealed class VhostFeatures
{
    /// <summary>Error pages are read whole into memory: larger ones are refused (the built-in text is sent).</summary>
    public const int MaxErrorPageBytes = 1 << 20;

    private static readonly byte[] TooLargeBody = "Content Too Large: the request body exceeds this site's limit\n"u8.ToArray();
    private static readonly Func<object, Task> s_applyHeaders = ApplyHeaders;

    private readonly (string Name, StringValues Value)[] _headers;
    private readonly Dictionary<int, string> _errorPages;
    private readonly Serilog.ILogger _log;

    public VhostFeatures(Vhost vhost, VhostWeb web, IServiceProvider services, Serilog.ILogger log)
    {
        ArgumentNullException.ThrowIfNull(vhost);
        ArgumentNullException.ThrowIfNull(web);
        if (VhostWebRules.Validate(web, [vhost.Name, .. vhost.Settings.Aliases]) is { } problem)
        {
            throw new ArgumentException($"Vhost '{vhost.Name}': {problem}.", nameof(web));
        }

        Vhost = vhost;
        Web = web;
        _log = log;
        _headers = [.. web.Headers.Select(h => (h.Name, new StringValues(h.Value)))];
        _errorPages = web.ErrorPages.ToDictionary(p => p.Status, p => p.Path);
        Compression = web.Compression is { } compression ? new VhostCompressionProvider(services, compression) : null;
    }

    public Vhost Vhost { get; }

    public VhostWeb Web { get; }

    /// <summary>The vhost's response compression, or null when it is off.</summary>
    public VhostCompressionProvider? Compression { get; }

    public bool Precompressed => Web.Compression is { Precompressed: true } && Compression is not null;

    /// <summary>The vhost pipeline's first middleware.</summary>
    public RequestDelegate Middleware(RequestDelegate next) => context =>
    {
        context.Features.Set(this);

        // Kestrel enforces it while the body is read, Content-Length or chunked, HTTP/1.1 and h2 (413).
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
        {
            limit.MaxRequestBodySize = Web.MaxBodySize;
        }

        if (_headers.Length > 0 || Compression is not null)
        {
            context.Response.OnStarting(s_applyHeaders, context);
        }

        // A declared length over the limit: refused before any handler (no script started, no upstream connected).
        if (context.Request.ContentLength > Web.MaxBodySize)
        {
            return RequestHandler.WriteTextAsync(context, StatusCodes.Status413PayloadTooLarge, TooLargeBody, close: true);
        }

        return TryRedirect(context) ?? next(context);
    };

    /// <summary>The file of a custom error page for <paramref name="status"/>, if one is configured.</summary>
    public bool TryGetErrorPage(int status, out string path) => _errorPages.TryGetValue(status, out path!);

    /// <summary>
    /// Sends the vhost's page for <paramref name="status"/> (read through the confined file provider, like any static
    /// file); when it cannot be read, says why in the vhost's error log and sends <paramref name="fallback"/>.
    /// </summary>
    public async Task WriteErrorPageAsync(HttpContext context, int status, string path, byte[] fallback, bool close)
    {
        byte[]? page = null;
        string? why = null;
        try
        {
            var file = Vhost.Files.GetFileInfo(path);
            if (!file.Exists)
            {
                why = "not found (or refused: outside the root, a denied name, a CGI directory)";
            }
            else if (file.Length > MaxErrorPageBytes)
            {
                why = $"{file.Length} bytes, more than {MaxErrorPageBytes}";
            }
            else
            {
                await using var stream = file.CreateReadStream();
                using var buffer = new MemoryStream((int)file.Length);
                await stream.CopyToAsync(buffer, context.RequestAborted);
                page = buffer.ToArray();
            }
        }
        catch (IOException e)
        {
            why = e.Message;
        }

        if (page is null)
        {
            RequestErrors.For(Vhost, context, _log).Warning("Error page {Page} of {Vhost} for status {Status} could not be served: {Reason}", path, Vhost.Name, status, why);
            await RequestHandler.WriteTextAsync(context, status, fallback, close, errorPage: false);
            return;
        }

        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = RequestHandler.ContentTypeOf(path);
        response.ContentLength = page.Length;
        if (close && !HttpProtocol.IsHttp2(context.Request.Protocol) && !HttpProtocol.IsHttp3(context.Request.Protocol))
        {
            response.Headers.Connection = "close";
        }

        if (!HttpMethods.IsHead(context.Request.Method))
        {
            await response.Body.WriteAsync(page, context.RequestAborted);
        }
    }

    /// <summary>A redirect answered now (canonical host first, then the first matching path redirect), or null.</summary>
    private Task? TryRedirect(HttpContext context)
    {
        var request = context.Request;
        if (Web.CanonicalHost is { } canonical && !string.Equals(request.Host.Host.TrimEnd('.'), canonical, StringComparison.OrdinalIgnoreCase))
        {
            // As the dispatcher's http->https redirect: 301 for GET and HEAD, 308 (method and body kept) for the rest.
            var status = HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method)
                ? StatusCodes.Status301MovedPermanently
                : StatusCodes.Status308PermanentRedirect;
            var port = request.Host.Port;
            var location = UriHelper.BuildAbsolute(request.Scheme, port is { } p ? new HostString(canonical, p) : new HostString(canonical), request.PathBase, request.Path, request.QueryString);
            return WriteRedirectAsync(context, status, location);
        }

        if (Web.Redirects.Count == 0)
        {
            return null;
        }

        var path = request.Path.Value ?? "/";
        foreach (var r in Web.Redirects)
        {
            var rest = string.Empty;
            if (r.Prefix ? !VhostWebRules.Matches(r.From, path, out rest) : !string.Equals(path, r.From, StringComparison.Ordinal))
            {
                continue;
            }

            var question = r.To.IndexOf('?', StringComparison.Ordinal);
            var toPath = question < 0 ? r.To : r.To[..question];
            var toQuery = question < 0 ? string.Empty : r.To[(question + 1)..];
            var target = rest.Length == 0 ? toPath : toPath.TrimEnd('/') + new PathString(rest).ToUriComponent();
            var query = request.QueryString.HasValue ? request.QueryString.Value![1..] : string.Empty;
            var location = (toQuery.Length, query.Length) switch
            {
                (0, 0) => target,
                (0, _) => $"{target}?{query}",
                (_, 0) => $"{target}?{toQuery}",
                _ => $"{target}?{toQuery}&{query}",
            };
            return WriteRedirectAsync(context, r.Status, location);
        }

        return null;
    }

    private static Task WriteRedirectAsync(HttpContext context, int status, string location)
    {
        var response = context.Response;
        response.StatusCode = status;
        response.Headers.Location = location;
        response.ContentLength = 0;
        return Task.CompletedTask;
    }

    /// <summary>Just before the head goes out: the vhost's headers, and Vary when the response depends on Accept-Encoding.</summary>
    private static Task ApplyHeaders(object state)
    {
        var context = (HttpContext)state;
        if (context.Features.Get<VhostFeatures>() is not { } features)
        {
            return Task.CompletedTask;
        }

        var headers = context.Response.Headers;
        foreach (var (name, value) in features._headers)
        {
            headers[name] = value;
        }

        if (features.Compression is { } compression && compression.IsCompressible(context.Response.ContentType))
        {
            AddVary(headers);
        }

        return Task.CompletedTask;
    }

    /// <summary>Adds <c>Accept-Encoding</c> to Vary unless it is there already.</summary>
    internal static void AddVary(IHeaderDictionary headers)
    {
        var vary = headers.Vary;
        foreach (var value in vary)
        {
            if (value is not null && value.Contains(HeaderNames.AcceptEncoding, StringComparison.OrdinalIgnoreCase))
            {
                return;
            }
        }

        headers.Vary = StringValues.Concat(vary, HeaderNames.AcceptEncoding);
    }
}
