using Dispatch.Master.Certificates;
using Dispatch.Master.Files;
using Dispatch.Wire.Payloads;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>
/// One vhost (<c>vhosts:NAME</c>): names, pool, root, index, TLS and certificates, plain HTTP, CGI, proxy, logs, FastCGI,
/// the HTTP features (<see cref="WebSection"/>) and identity (<see cref="IdentitySection"/>). Checks across vhosts and
/// pools are in <see cref="CrossChecks"/>.
/// </summary>
internal static class VhostSection
{
    public static readonly string[] Keys = ["aliases", "pool", "root", "directoryListing", "index", "tls", "certDir", "certDirs", "http", "engine", "cgi", "cgiTimeout", "accessLog", "accessLogFormat", "errorLog", "proxy", "identity", "credentials", "realm", "users", "userTemplate", "loginLimits", "fastcgi", "tryFiles", .. WebSection.Keys];

    /// <param name="names">Every vhost name and alias read so far (a name may belong to one vhost only).</param>
    public static VhostConfig Read(
        ConfigContext ctx,
        IConfigurationSection v,
        HostMatcher<string> names,
        IReadOnlyDictionary<string, PoolConfig> pools,
        Dictionary<string, IReadOnlyList<(string Login, string? Hash)>?> credentials,
        DispatcherConfig dispatcher)
    {
        ctx.Unknown(v, v.Path, Keys);
        var name = HostNames.Normalize(v.Key);
        if (!HostNames.IsValidPattern(v.Key))
            ctx.Error(v.Path, $"'{v.Key}' is not a valid host name");
        else if (!names.TryAdd(name, name))
            ctx.Error(v.Path, $"'{name}' is already a name of another vhost");
        var aliases = new List<string>();
        foreach (var a in v.GetSection("aliases").GetChildren())
        {
            if (a.Value is null || !HostNames.IsValidPattern(a.Value))
            {
                ctx.Error(a.Path, $"'{a.Value}' is not a valid host name");
                continue;
            }

            var alias = HostNames.Normalize(a.Value);
            if (!names.TryAdd(alias, name))
                ctx.Error(a.Path, $"'{alias}' is already a name of another vhost");
            aliases.Add(alias);
        }

        var pool = v["pool"];
        if (pool is null && v["identity"] is null)
            ctx.Error($"{v.Path}:pool", "required");
        else if (pool is not null && !pools.ContainsKey(pool))
            ctx.Error($"{v.Path}:pool", $"no pool named '{pool}'");
        var docRoot = v["root"];
        if (docRoot is null)
            ctx.Error($"{v.Path}:root", "required");
        else if (!System.IO.Path.IsPathRooted(docRoot))
            ctx.Error($"{v.Path}:root", $"'{docRoot}' is not an absolute path");
        else if (!Directory.Exists(docRoot))
            ctx.Error($"{v.Path}:root", $"directory '{docRoot}' does not exist");
        else if (pool is not null && pools.TryGetValue(pool, out var pc) && pc.Uid != 0)
        {
            var why = PathSafety.CheckTraversable(System.IO.Path.GetDirectoryName(docRoot.TrimEnd('/')) ?? "/", pc.Uid, [pc.Gid, .. pc.Groups]);
            if (why is not null)
                ctx.Error($"{v.Path}:root", $"pool '{pool}' cannot reach its document root: {why}");
        }

        var index = v.GetSection("index").GetChildren().Select(i => i.Value ?? string.Empty).ToList();
        foreach (var i in index.Where(i => i.Length == 0 || i.Contains('/', StringComparison.Ordinal)))
            ctx.Error($"{v.Path}:index", $"'{i}' is not a file name");
        if (index.Count == 0)
            index.Add("index.html");
        var certDirs = v.GetSection("certDirs").GetChildren().Select(c => (c.Path, Value: c.Value ?? string.Empty)).ToList();
        if (v["certDir"] is { } single)
            certDirs.Insert(0, ($"{v.Path}:certDir", single));
        var tls = v["tls"] ?? (certDirs.Count > 0 ? TlsModes.Terminate : TlsModes.None);
        var certificates = new List<LoadedCertificate>();
        if (tls == TlsModes.Terminate)
        {
            if (certDirs.Count == 0)
                ctx.Error($"{v.Path}:certDir", "required for \"tls\": \"terminate\" (a certbot-layout directory with fullchain.pem and privkey.pem)");
            foreach (var (certPath, certDir) in certDirs)
            {
                if (CertDirProblem(certDir) is { } problem)
                {
                    ctx.Error(certPath, problem);
                    continue;
                }

                try
                {
                    certificates.Add(CertificateLoader.Load(certDir));
                }
                catch (CertificateException e)
                {
                    ctx.Error(certPath, e.Message);
                }
            }

            if (certificates.Count(c => c.KeyType.StartsWith("ECDSA", StringComparison.Ordinal)) > 1 || certificates.Count(c => c.KeyType.StartsWith("RSA", StringComparison.Ordinal)) > 1)
                ctx.Error($"{v.Path}:certDirs", "at most one ECDSA and one RSA certificate per vhost");
            foreach (var c in certificates.Where(c => !c.KeyType.StartsWith("ECDSA 256", StringComparison.Ordinal) && !c.KeyType.StartsWith("RSA", StringComparison.Ordinal)))
                ctx.Error($"{v.Path}:certDir", $"{c.Directory}: {c.KeyType} keys are not supported (ECDSA P-256 or RSA)");
        }
        else if (tls == TlsModes.Passthrough)
        {
            // The tenant's own key: only its worker, as the tenant, ever opens it. The master checks the path's shape only.
            if (certDirs.Count != 1)
                ctx.Error($"{v.Path}:certDir", "a passthrough vhost needs exactly one certDir (the tenant's own, read by its worker)");
            else if (CertDirProblem(certDirs[0].Value) is { } problem)
                ctx.Error(certDirs[0].Path, problem);
        }
        else if (tls != TlsModes.None)
        {
            ctx.Error($"{v.Path}:tls", $"'{tls}' is not a TLS mode (terminate, passthrough or none)");
        }

        var engine = v["engine"] ?? dispatcher.Engine;
        if (engine is not (TlsEngines.BouncyCastle or TlsEngines.OpenSsl))
            ctx.Error($"{v.Path}:engine", $"'{engine}' is not a TLS engine (bouncycastle or openssl)");

        var http = v["http"] ?? (v["identity"] is null ? HttpModes.Serve : HttpModes.Redirect);
        if (http is not (HttpModes.Serve or HttpModes.Redirect))
            ctx.Error($"{v.Path}:http", $"'{http}' is not a plain-HTTP mode (serve or redirect)");
        else if (http == HttpModes.Redirect && tls == TlsModes.None)
            ctx.Error($"{v.Path}:http", "redirecting to https needs the vhost to be reachable over TLS");
        var cgi = new List<CgiRoute>();
        foreach (var c in v.GetSection("cgi").GetChildren())
        {
            // Keys are URL prefixes ("/cgi-bin/"); IConfiguration keeps them verbatim.
            if (!c.Key.StartsWith('/'))
                ctx.Error(c.Path, $"'{c.Key}' is not a URL path prefix such as /cgi-bin/");
            else if (c.Value is null || !System.IO.Path.IsPathRooted(c.Value))
                ctx.Error(c.Path, $"'{c.Value}' is not an absolute directory");
            else if (!Directory.Exists(c.Value))
                ctx.Error(c.Path, $"directory '{c.Value}' does not exist");
            else
                cgi.Add(new CgiRoute(c.Key, c.Value.TrimEnd('/')));
        }

        var vhost = new VhostConfig(
            name, aliases, pool ?? string.Empty, docRoot ?? string.Empty, ctx.Bool(v.GetSection("directoryListing"), false), index, tls, certificates, http, engine,
            tls == TlsModes.Passthrough && certDirs.Count == 1 ? certDirs[0].Value.TrimEnd('/') : null,
            cgi,
            ctx.Duration(v.GetSection("cgiTimeout"), WorkerVhost.DefaultCgiTimeout),
            v["accessLog"],
            ReadProxy(ctx, v, cgi),
            v["errorLog"],
            WebSection.Read(ctx, v, [name, .. aliases]))
        {
            FastCgi = FastCgiConfigReader.Read(ctx.Error, ctx.Duration, v),
            TryFiles = [.. FastCgiConfigReader.ReadTryFiles(ctx.Error, v)],
            AccessLogFormat = ReadAccessLogFormat(ctx, v),
        };
        if (v["identity"] is not null)
        {
            var identity = IdentitySection.Read(ctx, v, name, pools, credentials, tls, engine, http, docRoot);
            vhost = vhost with { Identity = identity, OfferH2 = false };
        }

        foreach (var key in new[] { "accessLog", "errorLog" })
        {
            if (v[key] is { } logPath && TenantLogs.Check(logPath, pool is not null && pools.TryGetValue(pool, out var logPool) ? logPool.Gid : null) is { } logProblem)
                ctx.Error($"{v.Path}:{key}", logProblem);
        }

        return vhost;
    }

    /// <summary><c>accessLogFormat</c>: combined (the default) or json, and only beside an <c>accessLog</c>.</summary>
    private static string ReadAccessLogFormat(ConfigContext ctx, IConfigurationSection v)
    {
        var format = v.GetSection("accessLogFormat");
        if (format.Value is null)
        {
            if (format.GetChildren().Any())
                ctx.Error(format.Path, $"'{format.Key}' must be one of {string.Join(", ", WorkerVhost.AccessLogFormats)}");
            return WorkerVhost.AccessLogFormats[0];
        }

        if (!WorkerVhost.AccessLogFormats.Contains(format.Value, StringComparer.Ordinal))
            ctx.Error(format.Path, $"'{format.Value}' is not an access log format ({string.Join(" or ", WorkerVhost.AccessLogFormats)})");
        else if (v["accessLog"] is null)
            ctx.Error(format.Path, "needs accessLog: without a file of its own, the vhost's requests go to the master's log (structured properties)");
        return format.Value;
    }

    private static readonly string[] ProxyMappingKeys = ["upstream", "connectTimeout", "readTimeout"];

    /// <summary>
    /// Reverse-proxy mappings: a URL prefix to the tenant's app on a Unix socket or a loopback port. Each prefix maps to
    /// an upstream string or to an object { upstream, connectTimeout, readTimeout }; "connectTimeout" and "readTimeout"
    /// beside the prefixes are the vhost's defaults, and "upstream" beside them is the prefix "/".
    /// </summary>
    private static List<ProxyRoute> ReadProxy(ConfigContext ctx, IConfigurationSection vhost, List<CgiRoute> cgi)
    {
        var list = new List<ProxyRoute>();
        var section = vhost.GetSection("proxy");
        if (section.Value is not null)
        {
            ctx.Error(section.Path, "an object such as { \"/app/\": \"unix:/srv/a/run/app.sock\" }");
            return list;
        }

        var connectDefault = ctx.Duration(section.GetSection("connectTimeout"), ProxyRoute.DefaultConnectTimeout);
        var readDefault = ctx.Duration(section.GetSection("readTimeout"), ProxyRoute.DefaultReadTimeout);
        foreach (var p in section.GetChildren())
        {
            if (p.Key is "connectTimeout" or "readTimeout")
                continue;
            var prefix = "/";
            if (p.Key != "upstream" && !ProxyPrefix.TryNormalize(p.Key, out prefix, out var prefixProblem))
            {
                ctx.Error(p.Path, p.Key.StartsWith('/') ? prefixProblem : $"{prefixProblem} (nor upstream, connectTimeout, readTimeout)");
                continue;
            }

            string? text;
            var connect = connectDefault;
            var read = readDefault;
            var upstreamPath = p.Path;
            if (p.Value is not null)
            {
                text = p.Value;
            }
            else
            {
                ctx.Unknown(p, p.Path, ProxyMappingKeys);
                text = p["upstream"];
                upstreamPath = $"{p.Path}:upstream";
                connect = ctx.Duration(p.GetSection("connectTimeout"), connectDefault);
                read = ctx.Duration(p.GetSection("readTimeout"), readDefault);
            }

            if (!ProxyUpstream.TryParse(text, out var upstream, out var problem))
                ctx.Error(upstreamPath, problem);
            else if (cgi.Any(c => c.UrlPrefix.StartsWith(prefix, StringComparison.Ordinal) || prefix.StartsWith(c.UrlPrefix, StringComparison.Ordinal)))
                ctx.Error(p.Path, $"'{prefix}' overlaps a CGI prefix of the same vhost");
            else if (list.Any(m => m.UrlPrefix == prefix))
                ctx.Error(p.Path, $"'{prefix}' is mapped twice");
            else
                list.Add(new ProxyRoute(prefix, upstream, connect, read));
        }

        return list;
    }

    /// <summary>Null when <paramref name="certDir"/> can name a certbot-layout directory: absolute, and not the root itself.</summary>
    private static string? CertDirProblem(string certDir) =>
        !System.IO.Path.IsPathFullyQualified(certDir) ? $"'{certDir}' is not an absolute path"
        : System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(certDir)) == "/" ? $"'{certDir}' is the root directory, not a certificate directory"
        : null;
}
