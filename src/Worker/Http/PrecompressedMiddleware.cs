using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.StaticFiles;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;

namespace Dispatch.Worker.Http;

/// <summary>
/// Serves a static file's precompressed sibling (<c>app.js.br</c>, <c>app.js.gz</c>) when the client accepts that
/// encoding, as nginx's <c>gzip_static</c> and Caddy's <c>precompressed</c> do. The sibling is looked up through the same
/// <see cref="ConfinedFileProvider"/> as the original (a sibling that is a symlink out of the root, a denied name or in a
/// CGI directory is not there), and only for an original that exists and whose type the vhost compresses.
/// </summary>
/// <remarks>
/// StaticFiles then serves the sibling (Range, HEAD, conditionals as for any file: a range is a range of the encoded
/// bytes, as with nginx), and <see cref="PrepareResponse"/> gives it the original's Content-Type, the Content-Encoding,
/// <c>Vary: Accept-Encoding</c> and an ETag of its own (the sibling's, suffixed <c>-br</c> or <c>-gzip</c>). Validators
/// the client sends back are translated the other way before StaticFiles compares them: a tag of another encoding never
/// matches, so no client gets a 304 or a range for a representation it does not hold.
/// </remarks>
internal static class PrecompressedMiddleware
{
    private static readonly (string Encoding, string Extension)[] Encodings = [("br", ".br"), ("gzip", ".gz")];

    private static readonly StringValues NeverMatches = "\"dispatch-other-encoding\"";

    public static Func<RequestDelegate, RequestDelegate> For(VhostFeatures features, IContentTypeProvider types) => next => async context =>
    {
        var request = context.Request;
        if (!HttpMethods.IsGet(request.Method) && !HttpMethods.IsHead(request.Method)
            || request.Headers.AcceptEncoding.Count == 0
            || request.Path.Value is not { Length: > 1 } path
            || path.EndsWith('/')
            || !types.TryGetContentType(path, out var contentType)
            || features.Compression?.IsCompressible(contentType) != true)
        {
            await next(context);
            return;
        }

        var chosen = Choose(request.GetTypedHeaders().AcceptEncoding, features.Vhost.Files, path);
        if (chosen is not { } sibling)
        {
            await next(context);
            return;
        }

        context.Features.Set(new PrecompressedFeature(sibling.Encoding, contentType));
        TranslateValidators(request.Headers, sibling.Encoding);
        request.Path = new PathString(path + sibling.Extension);
        try
        {
            await next(context);
        }
        finally
        {
            request.Path = new PathString(path);
        }
    };

    /// <summary>StaticFiles' OnPrepareResponse: a sibling goes out as the original's type, encoded.</summary>
    public static void PrepareResponse(StaticFileResponseContext file)
    {
        var context = file.Context;
        if (context.Features.Get<PrecompressedFeature>() is not { } sibling)
        {
            return;
        }

        var headers = context.Response.Headers;
        context.Response.ContentType = sibling.ContentType;
        headers.ContentEncoding = sibling.Encoding;
        VhostFeatures.AddVary(headers);
        var etag = headers.ETag.ToString();
        if (etag.Length > 1 && etag[^1] == '"')
        {
            headers.ETag = string.Concat(etag.AsSpan(0, etag.Length - 1), "-", sibling.Encoding, "\"");
        }
    }

    /// <summary>The client's preferred encoding (by q, brotli first on a tie) whose sibling exists, if the original does.</summary>
    private static (string Encoding, string Extension)? Choose(IList<StringWithQualityHeaderValue> accepted, ConfinedFileProvider files, string path)
    {
        (string Encoding, string Extension)? best = null;
        var bestQuality = 0.0;
        var originalChecked = false;
        foreach (var (encoding, extension) in Encodings)
        {
            var quality = Quality(accepted, encoding);
            if (quality <= bestQuality)
            {
                continue;
            }

            if (!originalChecked)
            {
                if (!files.GetFileInfo(path).Exists)
                {
                    return null;
                }

                originalChecked = true;
            }

            if (files.GetFileInfo(path + extension).Exists)
            {
                best = (encoding, extension);
                bestQuality = quality;
            }
        }

        return best;
    }

    /// <summary>The q-value the client gives <paramref name="encoding"/> (its own entry, else <c>*</c>), 0 if none.</summary>
    private static double Quality(IList<StringWithQualityHeaderValue> accepted, string encoding)
    {
        double? star = null;
        foreach (var value in accepted)
        {
            var q = value.Quality ?? 1.0;
            if (value.Value.Equals(encoding, StringComparison.OrdinalIgnoreCase))
            {
                return q;
            }

            if (value.Value.Equals("*", StringComparison.Ordinal))
            {
                star = q;
            }
        }

        return star ?? 0;
    }

    /// <summary>If-None-Match and If-Range as StaticFiles must see them for the sibling (see the remarks).</summary>
    private static void TranslateValidators(IHeaderDictionary headers, string encoding)
    {
        var suffix = "-" + encoding + "\"";
        var ifNoneMatch = headers.IfNoneMatch.ToString();
        if (ifNoneMatch.Length > 0 && ifNoneMatch.Trim() != "*")
        {
            var kept = ifNoneMatch.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Where(t => t.EndsWith(suffix, StringComparison.Ordinal))
                .Select(t => t[..^suffix.Length] + "\"")
                .ToArray();
            headers.IfNoneMatch = kept.Length == 0 ? NeverMatches : string.Join(", ", kept);
        }

        var ifRange = headers.IfRange.ToString().Trim();
        if (ifRange.StartsWith('"') || ifRange.StartsWith("W/", StringComparison.Ordinal))
        {
            headers.IfRange = ifRange.EndsWith(suffix, StringComparison.Ordinal) ? ifRange[..^suffix.Length] + "\"" : NeverMatches;
        }
    }

    private sealed record PrecompressedFeature(string Encoding, string ContentType);
}
