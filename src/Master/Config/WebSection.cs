using Dispatch.Wire.Payloads;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>A vhost's HTTP features (docs/vhost-features.md): the values are checked by <see cref="VhostWebRules"/>, shared with the worker.</summary>
internal static class WebSection
{
    public static readonly string[] Keys = ["compression", "maxBodySize", "headers", "errorPages", "canonicalHost", "redirects"];
    private static readonly string[] CompressionKeys = ["minSize", "types", "precompressed", "level"];
    private static readonly string[] RedirectKeys = ["from", "to", "status", "match"];

    public static VhostWeb Read(ConfigContext ctx, IConfigurationSection vhost, IReadOnlyList<string> names)
    {
        var maxBodySize = VhostWebRules.DefaultMaxBodySize;
        var size = vhost.GetSection("maxBodySize");
        if (size.Value is not null && VhostWebRules.ParseSize(size.Value, out maxBodySize) is { } sizeWhy)
        {
            ctx.Error(size.Path, sizeWhy);
            maxBodySize = VhostWebRules.DefaultMaxBodySize;
        }
        else if (size.Value is null && size.GetChildren().Any())
        {
            ctx.Error(size.Path, "a size such as 50m, not an object or array");
        }

        var headers = new List<HeaderRoute>();
        var headerSection = vhost.GetSection("headers");
        if (headerSection.Value is not null)
            ctx.Error(headerSection.Path, "an object of header names and values such as { \"Strict-Transport-Security\": \"max-age=63072000\" }");
        foreach (var h in headerSection.GetChildren())
        {
            if (h.Value is null)
                ctx.Error(h.Path, "a header value is a string, not an object or array");
            else if (VhostWebRules.CheckHeader(h.Key, h.Value) is { } why)
                ctx.Error(h.Path, why);
            else
                headers.Add(new HeaderRoute(h.Key, h.Value));
        }

        var pages = new List<ErrorPageRoute>();
        var pageSection = vhost.GetSection("errorPages");
        if (pageSection.Value is not null)
            ctx.Error(pageSection.Path, "an object of statuses and file paths such as { \"404\": \"/errors/404.html\" }");
        foreach (var p in pageSection.GetChildren())
        {
            if (VhostWebRules.ParseErrorStatus(p.Key, out var status) is { } statusWhy)
                ctx.Error(p.Path, statusWhy);
            else if (VhostWebRules.CheckRootPath(p.Value) is { } pathWhy)
                ctx.Error(p.Path, pathWhy);
            else
                pages.Add(new ErrorPageRoute(status, p.Value!));
        }

        var canonical = vhost["canonicalHost"];
        if (canonical is not null && VhostWebRules.CheckCanonicalHost(canonical, names) is { } hostWhy)
        {
            ctx.Error($"{vhost.Path}:canonicalHost", hostWhy);
            canonical = null;
        }

        return new VhostWeb(ReadCompression(ctx, vhost), maxBodySize, [.. headers], [.. pages], canonical is null ? null : HostNames.Normalize(canonical), [.. ReadRedirects(ctx, vhost)]);
    }

    /// <summary><c>"compression"</c>: absent or true (the defaults), false (off), or an object of options.</summary>
    private static CompressionRoute? ReadCompression(ConfigContext ctx, IConfigurationSection vhost)
    {
        // An empty object has neither a value nor children: it is listed among the vhost's keys only (the defaults).
        var section = vhost.GetChildren().FirstOrDefault(c => c.Key.Equals("compression", StringComparison.OrdinalIgnoreCase));
        if (section is null)
            return CompressionRoute.Default;
        if (section.Value is { Length: > 0 } flag)
        {
            if (!bool.TryParse(flag, out var on))
            {
                ctx.Error(section.Path, $"'{flag}' is neither true, false nor an object with {string.Join(", ", CompressionKeys)}");
                return null;
            }

            return on ? CompressionRoute.Default : null;
        }

        ctx.Unknown(section, section.Path, CompressionKeys);
        var defaults = CompressionRoute.Default;
        var minSize = ctx.Int(section.GetSection("minSize"), defaults.MinSize, 0, VhostWebRules.MaxCompressMinSize);
        var level = section["level"] ?? defaults.Level;
        if (VhostWebRules.CheckCompressionLevel(level) is { } levelWhy)
        {
            ctx.Error($"{section.Path}:level", levelWhy);
            level = defaults.Level;
        }

        var types = defaults.Types;
        var typeSection = section.GetSection("types");
        if (typeSection.Value is not null)
        {
            ctx.Error(typeSection.Path, "a list of media types such as [\"text/*\", \"application/json\"]");
        }
        else if (typeSection.GetChildren().Any())
        {
            var list = new List<string>();
            foreach (var t in typeSection.GetChildren())
            {
                if (VhostWebRules.CheckCompressType(t.Value) is { } why)
                    ctx.Error(t.Path, why);
                else
                    list.Add(t.Value!);
            }

            types = [.. list];
        }

        return new CompressionRoute(minSize, types, ctx.Bool(section.GetSection("precompressed"), defaults.Precompressed), level);
    }

    /// <summary><c>"redirects"</c>: a list of { from, to, status (301), match (exact or prefix) }, first match wins.</summary>
    private static List<RedirectRoute> ReadRedirects(ConfigContext ctx, IConfigurationSection vhost)
    {
        var list = new List<RedirectRoute>();
        var section = vhost.GetSection("redirects");
        if (section.Value is not null)
        {
            ctx.Error(section.Path, "a list of redirects such as [{ \"from\": \"/old\", \"to\": \"/new\", \"status\": 301 }]");
            return list;
        }

        var seen = new Dictionary<(string, bool), string>();
        foreach (var r in section.GetChildren())
        {
            if (r.Value is not null)
            {
                ctx.Error(r.Path, "a redirect is an object with from, to, status and match");
                continue;
            }

            ctx.Unknown(r, r.Path, RedirectKeys);
            var from = r["from"];
            var to = r["to"];
            var status = 301;
            var ok = true;
            if (VhostWebRules.CheckRedirectFrom(from) is { } fromWhy)
            {
                ctx.Error($"{r.Path}:from", from is null ? "required (a URL path such as /old)" : fromWhy);
                ok = false;
            }

            if (VhostWebRules.CheckRedirectTo(to) is { } toWhy)
            {
                ctx.Error($"{r.Path}:to", to is null ? "required (a path such as /new or an absolute http(s) URL)" : toWhy);
                ok = false;
            }

            if (r["status"] is { } statusText && VhostWebRules.CheckRedirectStatus(statusText, out status) is { } statusWhy)
            {
                ctx.Error($"{r.Path}:status", statusWhy);
                ok = false;
            }

            var match = r["match"] ?? "exact";
            if (match is not ("exact" or "prefix"))
            {
                ctx.Error($"{r.Path}:match", $"'{match}' is not a match (exact or prefix)");
                ok = false;
            }

            if (!ok)
                continue;
            var prefix = match == "prefix";
            if (VhostWebRules.CheckRedirectLoop(from!, to!, prefix) is { } loopWhy)
                ctx.Error($"{r.Path}:to", loopWhy);
            else if (!seen.TryAdd((prefix ? from!.TrimEnd('/') : from!, prefix), r.Path))
                ctx.Error($"{r.Path}:from", $"'{from}' is already redirected by {seen[(prefix ? from!.TrimEnd('/') : from!, prefix)]}");
            else
                list.Add(new RedirectRoute(from!, to!, status, prefix));
        }

        return list;
    }
}
