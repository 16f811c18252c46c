using System.Collections.Concurrent;
using System.IO.Compression;
using Dispatch.Wire.Payloads;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.ResponseCompression;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;

namespace Dispatch.Worker.Http;

/// <summary>
/// ASP.NET Core's response compression for one vhost: brotli then gzip, the vhost's media types (never the
/// already-compressed ones), also over HTTPS (deliberately: see docs/vhost-features.md on BREACH), and not for a body
/// of known length under <see cref="CompressionRoute.MinSize"/>, a partial response or one already encoded.
/// </summary>
internal sealed class VhostCompressionProvider : ResponseCompressionProvider
{
    private readonly CompressionRoute _settings;
    private readonly HashSet<string> _exact;
    private readonly HashSet<string> _wildcards;

    /// <summary>
    /// <see cref="IsCompressible"/>'s answers by Content-Type, computed once: it runs for every response (Vary, and
    /// the compression decision), and a vhost's responses carry a handful of types (static files take theirs from one
    /// table). Bounded, so that handlers naming arbitrary types (CGI, the proxy) cannot grow it without end.
    /// </summary>
    private readonly ConcurrentDictionary<string, bool> _answers = new(StringComparer.Ordinal);

    /// <summary>Distinct Content-Type values whose answer is kept; others are computed each time.</summary>
    internal const int MaxCachedAnswers = 256;

    private int _cached;

    public VhostCompressionProvider(IServiceProvider services, CompressionRoute settings)
        : base(services, Options.Create(CreateOptions(settings)))
    {
        _settings = settings;
        _exact = settings.Types.Where(t => !t.EndsWith("/*", StringComparison.Ordinal)).ToHashSet(StringComparer.OrdinalIgnoreCase);
        _wildcards = settings.Types.Where(t => t.EndsWith("/*", StringComparison.Ordinal)).Select(t => t[..^1]).ToHashSet(StringComparer.OrdinalIgnoreCase);
    }

    public override bool ShouldCompressResponse(HttpContext context)
    {
        var response = context.Response;
        if (response.StatusCode is StatusCodes.Status206PartialContent or StatusCodes.Status204NoContent or StatusCodes.Status304NotModified
            || response.Headers.ContainsKey(HeaderNames.ContentRange)
            || response.ContentLength < _settings.MinSize)
        {
            return false;
        }

        return base.ShouldCompressResponse(context) && IsCompressible(response.ContentType);
    }

    /// <summary>Whether responses of this Content-Type are compressed here (so vary with Accept-Encoding).</summary>
    public bool IsCompressible(string? contentType)
    {
        if (string.IsNullOrEmpty(contentType))
        {
            return false;
        }

        if (_answers.TryGetValue(contentType, out var known))
        {
            return known;
        }

        var answer = Decide(contentType);
        if (Volatile.Read(ref _cached) < MaxCachedAnswers && _answers.TryAdd(contentType, answer))
        {
            Interlocked.Increment(ref _cached);
        }

        return answer;
    }

    /// <summary>The number of Content-Type answers kept (tests).</summary>
    internal int CachedAnswers => _answers.Count;

    private bool Decide(string contentType)
    {
        var semicolon = contentType.IndexOf(';', StringComparison.Ordinal);
        var type = (semicolon < 0 ? contentType : contentType[..semicolon]).Trim().ToLowerInvariant();
        var slash = type.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0)
        {
            return false;
        }

        if (_exact.Contains(type))
        {
            return true;
        }

        return !VhostWebRules.IsNeverCompressed(type) && _wildcards.Contains(type[..(slash + 1)]);
    }

    private static ResponseCompressionOptions CreateOptions(CompressionRoute settings)
    {
        var level = settings.Level switch
        {
            "optimal" => CompressionLevel.Optimal,
            "smallest" => CompressionLevel.SmallestSize,
            _ => CompressionLevel.Fastest,
        };
        var options = new ResponseCompressionOptions
        {
            // The trade-off is the operator's to make per vhost ("compression": false); see the docs on BREACH.
            EnableForHttps = true,
            MimeTypes = settings.Types,
            ExcludedMimeTypes = VhostWebRules.NeverCompressTypes,
        };
        options.Providers.Add(new BrotliCompressionProvider(Options.Create(new BrotliCompressionProviderOptions { Level = level })));
        options.Providers.Add(new GzipCompressionProvider(Options.Create(new GzipCompressionProviderOptions { Level = level })));
        return options;
    }
}
