using System.Collections.Frozen;
using System.Net.Http.Headers;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;
using Yarp.ReverseProxy.Forwarder;

namespace Dispatch.Worker.Http;

/// <summary>
/// What of a request reaches the tenant's application and what of its answer reaches the client (YARP calls it around
/// the exchange; <see cref="ProxyHandler"/> remarks describe the policy).
/// </summary>
/// <remarks>
/// Request: the target exactly as the client sent it (in origin-form), Host as sent, every field except hop-by-hop
/// ones (<see cref="HopByHop"/> and any named in Connection), HTTP/2 pseudo-fields, Expect (Kestrel answers
/// 100-continue itself when the body is first read) and Proxy (httpoxy); X-Forwarded-For gets the client's address
/// appended, X-Forwarded-Proto and X-Forwarded-Host replace whatever the client sent. YARP adds back the Connection and
/// Upgrade fields of a WebSocket upgrade (and builds them for an HTTP/2 extended CONNECT). Response and trailers: every
/// field except hop-by-hop ones and values Kestrel cannot send (non-ASCII or control characters: dropped, named in
/// <see cref="DroppedFieldsKey"/> for the handler to log).
/// </remarks>
internal sealed class ProxyTransformer : HttpTransformer
{
    /// <summary>HttpContext.Items key: the response fields dropped (a <see cref="List{T}"/> of names), if any.</summary>
    public const string DroppedFieldsKey = "Dispatch.Proxy.DroppedFields";

    /// <summary>HttpContext.Items key: the request's upstream base URI ("http://localhost" or "http://127.0.0.1:PORT").</summary>
    public const string TargetKey = "Dispatch.Proxy.Target";

    public static readonly ProxyTransformer Instance = new();

    private const string XForwardedFor = "X-Forwarded-For";
    private const string XForwardedProto = "X-Forwarded-Proto";
    private const string XForwardedHost = "X-Forwarded-Host";

    /// <summary>Connection-specific fields (RFC 9110, 7.6.1), never forwarded either way.</summary>
    internal static readonly FrozenSet<string> HopByHop = new[]
    {
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
    }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    private static readonly UriCreationOptions RawUri = new() { DangerousDisablePathAndQueryCanonicalization = true };

    private ProxyTransformer()
    {
    }

    public override async ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest, string destinationPrefix, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(httpContext);
        ArgumentNullException.ThrowIfNull(proxyRequest);
        var request = httpContext.Request;
        var headers = request.Headers;
        var connectionTokens = ConnectionTokens(headers.Connection);
        var emptyBodyFields = false;
        if (proxyRequest.Content is null && request.ContentLength == 0)
        {
            // "Content-Length: 0" sent explicitly: an empty body, whose Content-Type and such are kept. YARP refuses a
            // content it did not make, and puts content fields on an empty one of its own only in its base copy: let
            // it copy, keep the content fields it put there (less any the client named in Connection), and redo the
            // rest below by our rules.
            await base.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken);
            proxyRequest.Headers.Clear();
            if (proxyRequest.Content is { } empty)
            {
                emptyBodyFields = true;
                foreach (var token in connectionTokens)
                {
                    empty.Headers.Remove(token);
                }
            }
        }

        foreach (var (name, values) in headers)
        {
            if (name.Length == 0
                || name[0] == ':'
                || HopByHop.Contains(name)
                || connectionTokens.Contains(name)
                || name.Equals(HeaderNames.Host, StringComparison.OrdinalIgnoreCase)
                || name.Equals(HeaderNames.ContentLength, StringComparison.OrdinalIgnoreCase)
                || name.Equals(HeaderNames.Expect, StringComparison.OrdinalIgnoreCase)
                || name.Equals("HTTP2-Settings", StringComparison.OrdinalIgnoreCase)
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
            if (!proxyRequest.Headers.TryAddWithoutValidation(name, value) && !emptyBodyFields)
            {
                // A content field (Content-Type, Content-Encoding…): kept when there is a body to describe.
                proxyRequest.Content?.Headers.TryAddWithoutValidation(name, value);
            }
        }

        if (proxyRequest.Content is { } content && !headers.ContainsKey(HeaderNames.TransferEncoding))
        {
            content.Headers.ContentLength = request.ContentLength; // null: chunked to the application
        }

        string host = headers.Host.ToString();
        proxyRequest.Headers.TryAddWithoutValidation(HeaderNames.Host, host);

        var remote = httpContext.Connection.RemoteIpAddress is { IsIPv4MappedToIPv6: true } mapped
            ? mapped.MapToIPv4()
            : httpContext.Connection.RemoteIpAddress;
        var forwardedFor = string.Join(", ", headers[XForwardedFor].Where(v => !string.IsNullOrWhiteSpace(v)).ToArray());
        if (remote is not null)
        {
            forwardedFor = forwardedFor.Length == 0 ? remote.ToString() : forwardedFor + ", " + remote;
        }

        if (forwardedFor.Length > 0)
        {
            proxyRequest.Headers.TryAddWithoutValidation(XForwardedFor, forwardedFor);
        }

        proxyRequest.Headers.TryAddWithoutValidation(XForwardedProto, request.IsHttps ? "https" : "http");
        proxyRequest.Headers.TryAddWithoutValidation(XForwardedHost, host);

        // The raw target, not YARP's re-encoding of the decoded path (checked by the handler before forwarding).
        var target = httpContext.Items[TargetKey] as string ?? "/";
        proxyRequest.RequestUri = new Uri(destinationPrefix + target, in RawUri);
    }

    public override ValueTask<bool> TransformResponseAsync(HttpContext httpContext, HttpResponseMessage? proxyResponse, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(httpContext);
        if (proxyResponse is null)
        {
            return ValueTask.FromResult(false);
        }

        var response = httpContext.Response;
        if (httpContext.Features.Get<IHttpResponseFeature>() is { ReasonPhrase: { } reason } feature && !IsSendable(reason))
        {
            feature.ReasonPhrase = null; // the standard phrase instead
        }

        var connectionTokens = proxyResponse.Headers.NonValidated.TryGetValues(HeaderNames.Connection, out var connection)
            ? ConnectionTokens(connection)
            : [];
        List<string>? dropped = null;
        foreach (var (name, values) in proxyResponse.Headers.NonValidated.Concat(proxyResponse.Content.Headers.NonValidated))
        {
            if (HopByHop.Contains(name)
                || connectionTokens.Contains(name)
                || name.Equals(HeaderNames.ContentLength, StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            if (!AreSendable(values))
            {
                (dropped ??= []).Add(name);
                continue;
            }

            response.Headers[name] = ToStringValues(values); // replaces a default of ours (X-Content-Type-Options)
        }

        if (proxyResponse.Content.Headers.NonValidated.Contains(HeaderNames.ContentLength)
            && !proxyResponse.Headers.NonValidated.Contains(HeaderNames.TransferEncoding)
            && proxyResponse.Content.Headers.ContentLength is { } length
            && response.StatusCode != StatusCodes.Status204NoContent)
        {
            response.ContentLength = length;
        }

        if (dropped is not null)
        {
            httpContext.Items[DroppedFieldsKey] = dropped;
        }

        return ValueTask.FromResult(true);
    }

    public override ValueTask TransformResponseTrailersAsync(HttpContext httpContext, HttpResponseMessage proxyResponse, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(httpContext);
        ArgumentNullException.ThrowIfNull(proxyResponse);
        var trailers = httpContext.Features.Get<IHttpResponseTrailersFeature>()?.Trailers;
        if (trailers is null || trailers.IsReadOnly)
        {
            return ValueTask.CompletedTask;
        }

        foreach (var (name, values) in proxyResponse.TrailingHeaders.NonValidated)
        {
            if (!HopByHop.Contains(name) && AreSendable(values))
            {
                trailers[name] = ToStringValues(values);
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>The field names listed in Connection values.</summary>
    internal static HashSet<string> ConnectionTokens(IEnumerable<string?> values)
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

    private static StringValues ToStringValues(HeaderStringValues values) =>
        values.Count == 1 ? new StringValues(values.ToString()) : new StringValues(values.ToArray());

    private static bool AreSendable(IEnumerable<string> values) => values.All(IsSendable);

    private static bool IsSendable(string value)
    {
        foreach (var c in value)
        {
            if ((c < 0x20 && c != '\t') || c >= 0x7f)
            {
                return false;
            }
        }

        return true;
    }
}
