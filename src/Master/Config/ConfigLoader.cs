using System.Globalization;
using System.Net;
using Dispatch.Master.Certificates;
using Dispatch.Protocol.Identity;
using Dispatch.Protocol.Interop;
using Dispatch.Protocol.Routing;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>One problem in a config file: where (file and JSON path) and why.</summary>
internal sealed record ConfigError(string File, string Path, string Reason)
{
    public override string ToString() => $"{File}: {(Path.Length == 0 ? "(root)" : Path)}: {Reason}";
}

/// <summary>
/// Reads the JSON config (Microsoft.Extensions.Configuration.Json) and validates all of it, collecting
/// every error with its JSON path, so that <c>check</c> lists them all at once like <c>nginx -t</c>.
/// </summary>
internal static partial class ConfigLoader
{
    // "$schema": the JSON Schema (docs/dispatch.schema.json) for editors; its value is not used.
    private static readonly string[] TopLevel = ["$schema", "listen", "dispatcher", "pools", "vhosts", "security", "log", "jailProbe", "defaultVhost", "limits", "modules", "control", "metrics", "cgroup", "include"];
    private static readonly string[] ListenKeys = ["endpoint", "protocol", "trustedProxies"];
    private static readonly string[] DispatcherKeys = ["user", "group", "headerTimeout", "maxRequestHead", "workerWait", "nofile", "handshakeTimeout", "engine", "processes", "stopGrace", "sendTimeout", "limits"];
    private static readonly string[] PoolKeys = ["user", "group", "groups", "maxWorkers", "nofile", "landlock", "minSpare", "idleTimeout", "oneShot", "maxConnectionsPerWorker", "limits", "modules", "program", "cgroup", "chroot", "tlsHandOff", "timeouts"];
    private static readonly string[] VhostKeys = ["aliases", "pool", "root", "directoryListing", "index", "tls", "certDir", "certDirs", "http", "engine", "cgi", "cgiTimeout", "accessLog", "errorLog", "proxy", "identity", "credentials", "realm", "users", "userTemplate", "loginLimits", "fastcgi", "tryFiles", .. WebKeys];
    private static readonly string[] TemplateKeys = [.. PoolKeys.Where(k => k is not "user" and not "group"), "pool", "user"];

    public static (DispatchConfig? Config, List<ConfigError> Errors) Load(string path)
    {
        var errors = new List<ConfigError>();
        var full = System.IO.Path.GetFullPath(path);
        IConfigurationRoot root;
        try
        {
            if (!File.Exists(full))
            {
                errors.Add(new ConfigError(full, string.Empty, "file not found"));
                return (null, errors);
            }

            root = new ConfigurationBuilder()
                .AddJsonFile(full, optional: false, reloadOnChange: false)
                .Build();
        }
        catch (Exception e) when (e is FormatException or InvalidDataException or IOException or System.Text.Json.JsonException)
        {
            errors.Add(new ConfigError(full, string.Empty, $"not valid JSON: {e.InnerException?.Message ?? e.Message}"));
            return (null, errors);
        }

        // conf.d: vhosts and pools one file each (or several), merged in; errors name their own file.
        Dictionary<string, string>? sources = null;
        IncludeDirectory.Summary? included = null;
        if (root["include"] is { } include)
        {
            if (!System.IO.Path.IsPathFullyQualified(include) || !Directory.Exists(include))
            {
                errors.Add(new ConfigError(full, "include", $"'{include}' is not an absolute path to a directory"));
            }
            else
            {
                var taken = root.GetSection("vhosts").GetChildren().Select(c => $"vhosts:{c.Key}")
                    .Concat(root.GetSection("pools").GetChildren().Select(c => $"pools:{c.Key}")).ToHashSet(StringComparer.OrdinalIgnoreCase);
                (var pairs, sources, included) = IncludeDirectory.Read(include, taken, errors, full);
                root = new ConfigurationBuilder()
                    .AddJsonFile(full, optional: false, reloadOnChange: false)
                    .AddInMemoryCollection(pairs)
                    .Build();
            }
        }

        var ctx = new Context(full, errors, sources);
        ctx.Unknown(root, string.Empty, TopLevel);

        var security = new SecurityConfig(ctx.UInt(root.GetSection("security:minUid"), 1000));
        ctx.Unknown(root.GetSection("limits"), "limits", ["maxWorkers"]);
        var limits = new LimitsConfig(ctx.Int(root.GetSection("limits:maxWorkers"), 256, 1, 100_000));
        ctx.Unknown(root.GetSection("log"), "log", ["level", "file", "format", "console"]);
        var log = new LogConfig(root["log:level"] ?? "Information", root["log:file"], root["log:format"] ?? "text", root["log:console"] ?? "text");
        if (log.Level is not ("Verbose" or "Debug" or "Information" or "Warning" or "Error"))
            ctx.Error("log:level", $"'{log.Level}' is not one of Verbose, Debug, Information, Warning, Error");
        if (log.Format is not ("text" or "json"))
            ctx.Error("log:format", $"'{log.Format}' is not a log format (text or json)");
        if (log.Console is not ("text" or "json" or "none"))
            ctx.Error("log:console", $"'{log.Console}' is not a console log format (text, json or none)");
        if (log.File is not null && !System.IO.Path.IsPathFullyQualified(log.File))
            ctx.Error("log:file", $"'{log.File}' is not an absolute path");
        else if (log.File is not null && PathSafety.CheckRootOwned(System.IO.Path.GetDirectoryName(log.File)!) is { } logDirProblem)
            ctx.Error("log:file", $"the master's log must live in a root-owned directory no one else can write: {logDirProblem}");

        ctx.Unknown(root.GetSection("control"), "control", ["socket"]);
        var controlSocket = root["control:socket"] ?? "/run/dispatch/control.sock";
        if (!System.IO.Path.IsPathFullyQualified(controlSocket) || controlSocket.EndsWith('/') || System.Text.Encoding.UTF8.GetByteCount(controlSocket) > 107)
            ctx.Error("control:socket", $"'{controlSocket}' is not an absolute socket path of at most 107 bytes");
        ctx.Unknown(root.GetSection("metrics"), "metrics", ["listen"]);
        IPEndPoint? metricsListen = null;
        if (root["metrics:listen"] is { } metricsText)
        {
            if (!IPEndPoint.TryParse(metricsText, out metricsListen) || metricsListen.Port == 0)
                ctx.Error("metrics:listen", $"'{metricsText}' is not an address:port such as 127.0.0.1:9187");
            else if (!IPAddress.IsLoopback(metricsListen.Address))
                ctx.Error("metrics:listen", $"{metricsListen} is not a loopback address: the metrics endpoint has no authentication, so it listens on 127.0.0.0/8 or ::1 only");
        }

        var operations = new OperationsConfig(controlSocket, metricsListen);

        var listen = new List<ListenConfig>();
        var listenSection = root.GetSection("listen");
        if (!listenSection.GetChildren().Any())
            ctx.Error("listen", "at least one listener is required");
        foreach (var l in listenSection.GetChildren())
        {
            ctx.Unknown(l, l.Path, ListenKeys);
            var endpoint = l["endpoint"];
            var protocol = l["protocol"] ?? "http";
            if (protocol is not ("http" or "tls"))
                ctx.Error($"{l.Path}:protocol", $"'{protocol}' is not a listener protocol (http or tls)");
            if (endpoint is null || !IPEndPoint.TryParse(endpoint, out var ep) || ep.Port == 0)
            {
                ctx.Error($"{l.Path}:endpoint", $"'{endpoint}' is not an address:port such as 127.0.0.1:8080 or [::]:80");
                continue;
            }

            if (listen.Any(x => x.Endpoint.Equals(ep)))
                ctx.Error($"{l.Path}:endpoint", $"{ep} is listed twice");
            var trusted = new List<string>();
            foreach (var t in l.GetSection("trustedProxies").GetChildren())
            {
                var value = t.Value ?? string.Empty;
                var slash = value.IndexOf('/', StringComparison.Ordinal);
                if (!IPAddress.TryParse(slash < 0 ? value : value[..slash], out var address)
                    || (slash >= 0 && (!int.TryParse(value[(slash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var bits) || bits > address.GetAddressBytes().Length * 8)))
                    ctx.Error(t.Path, $"'{value}' is not an address or CIDR block such as 10.0.0.0/8");
                else
                    trusted.Add(value);
            }

            listen.Add(new ListenConfig(ep, protocol, trusted));
        }

        var d = root.GetSection("dispatcher");
        ctx.Unknown(d, "dispatcher", DispatcherKeys);
        var (dUid, dGid) = ctx.Identity(d, "dispatcher");
        if (dUid == 0 && d["user"] is not null)
            ctx.Error("dispatcher:user", "the dispatcher must not run as root");
        var dispatcher = new DispatcherConfig(
            dUid,
            dGid,
            ctx.Duration(d.GetSection("headerTimeout"), TimeSpan.FromSeconds(10)),
            ctx.Int(d.GetSection("maxRequestHead"), 16384, 1024, 60000),
            ctx.Duration(d.GetSection("workerWait"), TimeSpan.FromSeconds(30)),
            ctx.ULong(d.GetSection("nofile"), 65536),
            ctx.Duration(d.GetSection("handshakeTimeout"), TimeSpan.FromSeconds(10)),
            d["engine"] ?? TlsEngines.BouncyCastle,
            ctx.Int(d.GetSection("processes"), 1, 1, 64),
            ctx.Duration(d.GetSection("stopGrace"), TimeSpan.FromSeconds(30)))
        {
            SendTimeout = ctx.Duration(d.GetSection("sendTimeout"), TimeSpan.FromSeconds(60)),
            ClientLimits = ReadClientLimits(ctx, d.GetSection("limits")),
        };
        if (dispatcher.Engine is not (TlsEngines.BouncyCastle or TlsEngines.OpenSsl))
            ctx.Error("dispatcher:engine", $"'{dispatcher.Engine}' is not a TLS engine (bouncycastle or openssl)");

        // Third-party privilege modules (native shared libraries, docs/modules.md): loaded (checked) once
        // here, their validate called per pool below.
        var modules = new Dictionary<string, Dispatch.Protocol.Modules.PrivilegeModule>(StringComparer.Ordinal);
        foreach (var m in root.GetSection("modules").GetChildren())
        {
            if (m["assembly"] is not null || m["type"] is not null)
            {
                ctx.Error(m.Path, "managed modules (\"assembly\", \"type\") are gone: a module is a shared library named by \"library\" (docs/modules.md)");
                continue;
            }

            ctx.Unknown(m, m.Path, ["library"]);
            var library = m["library"];
            if (library is null)
            {
                ctx.Error(m.Path, "a module needs \"library\": the absolute path of its shared library");
                continue;
            }

            try
            {
                modules[m.Key] = Dispatch.Protocol.Modules.ModuleLoader.Load(library);
            }
            catch (Dispatch.Protocol.Modules.ModuleException e)
            {
                ctx.Error($"{m.Path}:library", $"refused: {e.Message}");
            }
        }

        var cgroupSection = root.GetSection("cgroup");
        ctx.Unknown(cgroupSection, "cgroup", ["root", "required"]);
        var cgroup = new CgroupConfig(cgroupSection["root"] ?? "dispatch", ctx.Bool(cgroupSection.GetSection("required"), false));
        if (!IsCgroupPath(cgroup.Root))
            ctx.Error("cgroup:root", $"'{cgroup.Root}' is not a cgroup path: '/'-separated names of letters, digits, '-', '_', '.' and '@' (absolute, or relative to the master's own group), no '.' or '..'");

        var pools = new Dictionary<string, PoolConfig>(StringComparer.Ordinal);
        var poolSection = root.GetSection("pools");
        var poolSections = new List<(IConfigurationSection Section, string Name, string Path)>();
        void ReadPool(IConfigurationSection p, string poolName, string poolPath, (uint Uid, uint Gid)? forced)
        {
            ctx.Unknown(p, poolPath, forced is null ? PoolKeys : TemplateKeys);
            if (!IsPoolName(poolName))
                ctx.Error(poolPath, $"pool '{poolName}': a pool name is 1-64 characters of letters, digits, '-', '_' and '.'");
            var (uid, gid) = forced ?? ctx.Identity(p, poolPath);
            var groups = new List<uint>();
            foreach (var g in p.GetSection("groups").GetChildren())
            {
                var gidValue = ctx.ResolveGroup(g.Value, g.Path);
                if (gidValue is null)
                    continue;
                if (gidValue == 0 || gidValue < security.MinUid)
                    ctx.Error(g.Path, $"supplementary group {gidValue} is privileged (below security:minUid {security.MinUid})");
                else if (gidValue == dispatcher.Gid)
                    ctx.Error(g.Path, $"supplementary group {gidValue} is the dispatcher's group");
                groups.Add(gidValue.Value);
            }

            if (forced is not null || p["user"] is not null)
            {
                if (uid == 0)
                    ctx.Error($"{poolPath}:user", "a pool must not run as root (uid 0)");
                else if (uid < security.MinUid)
                    ctx.Error($"{poolPath}:user", $"uid {uid} is below security:minUid {security.MinUid}");
                else if (uid == dispatcher.Uid)
                    ctx.Error($"{poolPath}:user", $"uid {uid} is the dispatcher's uid");
                if (gid == 0)
                    ctx.Error($"{poolPath}:group", "a pool must not run with gid 0");
                else if (gid < security.MinUid)
                    ctx.Error($"{poolPath}:group", $"gid {gid} is below security:minUid {security.MinUid}");
                else if (gid == dispatcher.Gid)
                    ctx.Error($"{poolPath}:group", $"gid {gid} is the dispatcher's group");
            }

            var landlock = p.GetSection("landlock");
            ctx.Unknown(landlock, landlock.Path, ["read", "exec", "write", "connectTcp"]);
            // "landlock": false turns it off, which only a chroot pool may do.
            var landlockOn = landlock.Value is null || ctx.Bool(landlock, true);
            List<string> AbsolutePaths(IConfigurationSection section)
            {
                var list = new List<string>();
                foreach (var c in section.GetChildren())
                {
                    if (c.Value is null || !System.IO.Path.IsPathRooted(c.Value))
                        ctx.Error(c.Path, $"'{c.Value}' is not an absolute path");
                    else
                        list.Add(c.Value);
                }

                return list;
            }

            pools[poolName] = new PoolConfig(
                poolName, uid, gid, groups,
                ctx.Int(p.GetSection("maxWorkers"), 4, 1, 1024),
                ctx.ULong(p.GetSection("nofile"), 65536),
                AbsolutePaths(landlock.GetSection("read")),
                landlock.GetSection("exec").Exists() ? AbsolutePaths(landlock.GetSection("exec")) : null,
                ctx.Int(p.GetSection("minSpare"), 0, 0, 1024),
                ctx.Duration(p.GetSection("idleTimeout"), TimeSpan.FromSeconds(60)),
                ctx.Bool(p.GetSection("oneShot"), false),
                ctx.Int(p.GetSection("maxConnectionsPerWorker"), 0, 0, 1_000_000),
                ReadLimits(ctx, p),
                ReadModules(ctx, p, modules),
                p["program"],
                ReadCgroupLimits(ctx, p),
                AbsolutePaths(landlock.GetSection("write")).Select(w => w.TrimEnd('/') is { Length: > 0 } t ? t : "/").ToList(),
                ReadPorts(ctx, landlock.GetSection("connectTcp")),
                ReadChroot(ctx, p),
                landlockOn,
                ctx.Bool(p.GetSection("tlsHandOff"), false))
            {
                Timeouts = ReadTimeouts(ctx, p),
            };
            if (pools[poolName].TlsHandOff && p["program"] is null)
                ctx.Error($"{poolPath}:tlsHandOff", "only a pool with \"program\" declares this (whether Dispatch's own worker takes handed TLS sessions is built in)");
            if (!landlockOn && pools[poolName].Chroot is null)
                ctx.Error(landlock.Path, "Landlock may be turned off only in a pool with \"chroot\" (a worker needs at least one filesystem jail)");
            if (p["program"] is { } program)
            {
                // Executed as root's child before the drop completes (it is exec'd by stage 1): same rules as modules.
                var why = !System.IO.Path.IsPathRooted(program) ? $"'{program}' is not an absolute path" : PathSafety.CheckRootOwned(program);
                if (why is null && (File.GetUnixFileMode(program) & UnixFileMode.UserExecute) == 0)
                    why = $"{program} is not executable";
                if (why is not null)
                    ctx.Error($"{poolPath}:program", why);
            }
            if (pools[poolName].MinSpare > pools[poolName].MaxWorkers)
                ctx.Error($"{poolPath}:minSpare", $"{pools[poolName].MinSpare} spares exceed maxWorkers {pools[poolName].MaxWorkers}");
            poolSections.Add((p, poolName, poolPath));
        }

        foreach (var p in poolSection.GetChildren())
            ReadPool(p, p.Key, p.Path, null);

        // Pools made from identity vhosts' templates: one per login, through the same checks as the explicit ones.
        var credentials = new Dictionary<string, IReadOnlyList<(string Login, string? Hash)>?>(StringComparer.Ordinal);
        foreach (var v in root.GetSection("vhosts").GetChildren())
            ReadTemplatePools(ctx, v, pools, credentials, ReadPool);
        if (pools.Count == 0 && !poolSection.GetChildren().Any())
            ctx.Error("pools", "at least one pool is required (or an identity vhost's userTemplate)");

        var vhosts = new Dictionary<string, VhostConfig>(StringComparer.Ordinal);
        var names = new HostMatcher<string>();
        var vhostSection = root.GetSection("vhosts");
        if (!vhostSection.GetChildren().Any())
            ctx.Error("vhosts", "at least one vhost is required");
        foreach (var v in vhostSection.GetChildren())
        {
            ctx.Unknown(v, v.Path, VhostKeys);
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
                else if (!System.IO.Path.IsPathRooted(certDirs[0].Value))
                    ctx.Error(certDirs[0].Path, $"'{certDirs[0].Value}' is not an absolute path");
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
            var cgi = new List<(string, string)>();
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
                    cgi.Add((c.Key, c.Value.TrimEnd('/')));
            }

            vhosts[name] = new VhostConfig(
                name, aliases, pool ?? string.Empty, docRoot ?? string.Empty, ctx.Bool(v.GetSection("directoryListing"), false), index, tls, certificates, http, engine,
                tls == TlsModes.Passthrough && certDirs.Count == 1 ? certDirs[0].Value.TrimEnd('/') : null,
                cgi,
                ctx.Duration(v.GetSection("cgiTimeout"), TimeSpan.FromSeconds(30)),
                v["accessLog"],
                ReadProxy(ctx, v, cgi),
                v["errorLog"],
                ReadWeb(ctx, v, [name, .. aliases]))
            {
                FastCgi = FastCgiConfigReader.Read(ctx.Error, ctx.Duration, v),
                TryFiles = FastCgiConfigReader.ReadTryFiles(ctx.Error, v),
            };
            if (v["identity"] is not null)
            {
                var identity = ReadIdentity(ctx, v, name, pools, credentials, tls, engine, http, docRoot);
                vhosts[name] = vhosts[name] with { Identity = identity, OfferH2 = false };
            }

            foreach (var key in new[] { "accessLog", "errorLog" })
            {
                if (v[key] is { } logPath && TenantLogs.Check(logPath, pool is not null && pools.TryGetValue(pool, out var logPool) ? logPool.Gid : null) is { } logProblem)
                    ctx.Error($"{v.Path}:{key}", logProblem);
            }
        }

        // A log file is opened by root, chowned to root:pool and handed to the pool's workers: never a file root
        // depends on, and one file shared by two pools would mix tenants (the same file by name, or by device and
        // inode when it exists: another path to the same directory).
        var reserved = new List<(string Path, string What)> { (full, "the config file") };
        if (included is not null && Directory.Exists(included.Directory))
            reserved.AddRange(Directory.EnumerateFiles(included.Directory).Select(f => (f, "an included config file")));
        if (log.File is { } masterLog)
            reserved.Add((masterLog, "the master's log:file"));
        foreach (var c in vhosts.Values.SelectMany(v => v.Certificates).Where(c => Directory.Exists(c.Directory)))
            reserved.AddRange(Directory.EnumerateFiles(c.Directory).Select(f => (f, $"a file of certificate directory {c.Directory}")));
        var logOwners = new Dictionary<string, VhostConfig>(StringComparer.Ordinal);
        var logIdentities = new Dictionary<(ulong, ulong), VhostConfig>();
        foreach (var v in vhosts.Values)
        {
            foreach (var (key, logPath) in new[] { ("accessLog", v.AccessLog), ("errorLog", v.ErrorLog) })
            {
                if (logPath is null || !System.IO.Path.IsPathRooted(logPath))
                    continue;
                if (TenantLogs.CheckNotReserved(logPath, reserved) is { } why)
                {
                    ctx.Error($"vhosts:{v.Name}:{key}", why);
                    continue;
                }

                var normalized = System.IO.Path.GetFullPath(logPath);
                var identity = TenantLogs.Identity(normalized);
                var other = logOwners.GetValueOrDefault(normalized) ?? (identity is { } id ? logIdentities.GetValueOrDefault(id) : null);
                if (other is not null && other.Pool != v.Pool)
                {
                    ctx.Error($"vhosts:{v.Name}:{key}", $"{logPath} is also a log of vhost {other.Name} of pool {other.Pool}: a log file belongs to one pool");
                    continue;
                }

                logOwners.TryAdd(normalized, v);
                if (identity is { } known)
                    logIdentities.TryAdd(known, v);
            }
        }

        // Landlock write paths: now that every pool's vhosts are known. Each on its own first, then against the
        // other pools' acceptable ones.
        var acceptedWrites = new Dictionary<string, List<(string Path, string JsonPath)>>(StringComparer.Ordinal);
        foreach (var (p, poolName, _) in poolSections.Where(p => pools.ContainsKey(p.Name)))
        {
            var pool = pools[poolName];
            acceptedWrites[pool.Name] = [];
            foreach (var w in p.GetSection("landlock:write").GetChildren().Where(w => w.Value is not null && System.IO.Path.IsPathRooted(w.Value)))
            {
                var writePath = w.Value!.TrimEnd('/') is { Length: > 0 } t ? t : "/";
                if (LandlockRules.CheckWritePath(writePath, pool, vhosts.Values, full) is { } why)
                    ctx.Error(w.Path, why);
                else
                    acceptedWrites[pool.Name].Add((writePath, w.Path));
            }

            // A chroot's writable paths are bound read-write and given to Landlock as write rules: the same checks
            // (ReadChroot kept only the well-formed, existing ones).
            if (pool.Chroot is null)
                continue;
            var chrootSection = p.GetChildren().First(c => c.Key.Equals("chroot", StringComparison.OrdinalIgnoreCase));
            foreach (var w in chrootSection.GetSection("writable").GetChildren())
            {
                var writePath = w.Value is { } v && System.IO.Path.IsPathRooted(v) ? System.IO.Path.GetFullPath(v).TrimEnd('/') : null;
                if (writePath is null || !pool.Chroot.Writable.Contains(writePath, StringComparer.Ordinal))
                    continue;
                if (LandlockRules.CheckWritePath(writePath, pool, vhosts.Values, full, allowFile: true) is { } why)
                    ctx.Error(w.Path, why);
                else
                    acceptedWrites[pool.Name].Add((writePath, w.Path));
            }
        }

        foreach (var (poolName, writes) in acceptedWrites)
        {
            foreach (var (writePath, jsonPath) in writes)
            {
                var others = acceptedWrites.Where(o => o.Key != poolName).SelectMany(o => o.Value.Select(x => (Pool: o.Key, x.Path)));
                if (LandlockRules.CheckOtherPools(writePath, others) is { } why)
                    ctx.Error(jsonPath, why);
            }
        }

        foreach (var pool in pools.Values)
        {

            var ports = LandlockRules.ConnectPorts(pool, vhosts.Values.Where(v => v.ServedBy(pool.Name)));
            if (ports.Count > LandlockRules.MaxConnectPorts)
                ctx.Error($"pools:{pool.Name}:landlock:connectTcp", $"{ports.Count} TCP ports (with the proxy upstreams' ports) exceed the limit of {LandlockRules.MaxConnectPorts}");
        }

        // HTTP/2 coalescing: a browser reuses a connection for any name the certificate covers. If that
        // includes a name of another pool, HTTP/2 would carry this tenant's requests to the other's worker.
        foreach (var v in vhosts.Values.ToList())
        {
            var foreign = vhosts.Values.Where(w => w.Pool != v.Pool).SelectMany(w => w.Names)
                .Where(n => v.Certificates.SelectMany(c => c.DnsNames).Any(san => CertificateNames.Covers(san, n))).ToList();
            if (foreign.Count > 0)
                vhosts[v.Name] = v with { OfferH2 = false };
        }

        var defaultVhost = root["defaultVhost"] is { } dv ? HostNames.Normalize(dv) : null;
        if (defaultVhost is not null && !vhosts.ContainsKey(defaultVhost))
            ctx.Error("defaultVhost", $"no vhost named '{defaultVhost}'");

        foreach (var pool in pools.Keys.Where(p => !vhosts.Values.Any(v => v.ServedBy(p))))
            ctx.Error($"pools:{pool}", "no vhost uses this pool");

        // Limits this machine cannot apply: an error only when the config says they are required
        // (otherwise the master warns at start and `check` prints a warning).
        if (cgroup.Required && pools.Values.Any(p => p.Cgroup is not null))
        {
            foreach (var (where, reason) in Cgroups.Unavailable(pools.Values, Dispatch.Protocol.Hosting.CgroupHost.Detect()))
                ctx.Error(where, $"{reason}, and cgroup:required is true");
        }

        var probe = root.GetSection("jailProbe");
        var probePaths = probe.GetSection("paths").GetChildren().Select(c => c.Value ?? string.Empty).ToList();
        foreach (var (pp, i) in probePaths.Select((pp, i) => (pp, i)).Where(x => !System.IO.Path.IsPathRooted(x.pp)))
            ctx.Error($"jailProbe:paths:{i}", $"'{pp}' is not an absolute path");
        var jailProbe = new JailProbeConfig(probePaths, ctx.Int(probe.GetSection("threads"), 2, 1, 256));

        // Every check adds to errors before this one return: `run`, `check` and a reload all refuse
        // exactly when errors is not empty (a check after it would reach `check` only).
        if (metricsListen is not null && listen.Any(l => l.Endpoint.Equals(metricsListen)))
            ctx.Error("metrics:listen", $"{metricsListen} is also a listener");
        if (errors.Count > 0)
            return (null, errors);

        return (new DispatchConfig(full, listen, dispatcher, pools, vhosts, defaultVhost, security, limits, log, jailProbe, cgroup, operations) { Included = included }, errors);
    }

    /// <summary>dispatcher:limits: { perAddress: { connections, newPerSecond }, global: { connections, newPerSecond } }; 0: no limit.</summary>
    private static Dispatch.Protocol.Routing.ClientLimitSettings ReadClientLimits(Context ctx, IConfigurationSection section)
    {
        ctx.Unknown(section, section.Path, ["perAddress", "global"]);
        var perAddress = section.GetSection("perAddress");
        var global = section.GetSection("global");
        ctx.Unknown(perAddress, perAddress.Path, ["connections", "newPerSecond"]);
        ctx.Unknown(global, global.Path, ["connections", "newPerSecond"]);
        var d = Dispatch.Protocol.Routing.ClientLimitSettings.Default;
        return new Dispatch.Protocol.Routing.ClientLimitSettings(
            ctx.Int(perAddress.GetSection("connections"), d.PerAddressConnections, 0, 10_000_000),
            ctx.Int(perAddress.GetSection("newPerSecond"), d.PerAddressPerSecond, 0, 10_000_000),
            ctx.Int(global.GetSection("connections"), d.GlobalConnections, 0, 10_000_000),
            ctx.Int(global.GetSection("newPerSecond"), d.GlobalPerSecond, 0, 10_000_000));
    }

    /// <summary>A pool's "timeouts": its workers' send, keep-alive and request-header timeouts and Kestrel's minimum data rates.</summary>
    private static Dispatch.Protocol.Routing.WorkerTimeouts ReadTimeouts(Context ctx, IConfigurationSection pool)
    {
        var section = pool.GetSection("timeouts");
        ctx.Unknown(section, section.Path, ["send", "keepAlive", "requestHeaders", "minRequestBodyRate", "minResponseRate"]);
        var d = Dispatch.Protocol.Routing.WorkerTimeouts.Default;
        static int Ms(TimeSpan t) => (int)t.TotalMilliseconds;
        return new Dispatch.Protocol.Routing.WorkerTimeouts(
            Ms(ctx.Duration(section.GetSection("send"), TimeSpan.FromMilliseconds(d.SendMs))),
            Ms(ctx.Duration(section.GetSection("keepAlive"), TimeSpan.FromMilliseconds(d.KeepAliveMs))),
            Ms(ctx.Duration(section.GetSection("requestHeaders"), TimeSpan.FromMilliseconds(d.RequestHeadersMs))),
            ctx.Int(section.GetSection("minRequestBodyRate"), d.MinRequestBodyRate, 0, 1 << 30),
            ctx.Int(section.GetSection("minResponseRate"), d.MinResponseRate, 0, 1 << 30));
    }

    /// <summary>
    /// An identity vhost's <c>"userTemplate"</c>: a pool per enabled login of its credentials file, named by
    /// <c>"pool"</c> (default <c>{login}</c>), running as the login's passwd entry (<c>"user": "passwd"</c>) or as
    /// the uid (and gid) <c>FROM + n</c> of a range (<c>"user": "20000-29999"</c>, n the login's line among the file's
    /// logins, counting disabled ones), with every other pool setting of the template, through the same checks as an
    /// explicit pool. The credentials file is read here once per vhost and kept for <see cref="ReadIdentity"/>.
    /// </summary>
    private static void ReadTemplatePools(
        Context ctx,
        IConfigurationSection v,
        Dictionary<string, PoolConfig> pools,
        Dictionary<string, IReadOnlyList<(string Login, string? Hash)>?> credentials,
        Action<IConfigurationSection, string, string, (uint Uid, uint Gid)?> readPool)
    {
        if (v["identity"] is null || v["credentials"] is not { } file)
            return;
        try
        {
            credentials[v.Key] = CredentialsFile.Load(file);
        }
        catch (ConfigFileException e)
        {
            ctx.Error($"{v.Path}:credentials", e.Message);
            credentials[v.Key] = null;
            return;
        }

        var template = v.GetSection("userTemplate");
        if (!template.Exists())
            return;
        var path = template.Path;
        var pattern = template["pool"] ?? "{login}";
        if (pattern.Split("{login}").Length != 2)
        {
            ctx.Error($"{path}:pool", $"'{pattern}' must contain {{login}} exactly once");
            return;
        }

        var user = template["user"];
        (uint From, uint To)? range = null;
        if (user is null)
        {
            ctx.Error($"{path}:user", "required: \"passwd\" (the passwd entry of the login's name) or a uid range such as \"20000-29999\"");
            return;
        }

        if (user != "passwd")
        {
            var parts = user.Split('-');
            if (parts.Length != 2 || !uint.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var from)
                || !uint.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var to) || to < from)
            {
                ctx.Error($"{path}:user", $"'{user}' is neither \"passwd\" nor a uid range such as \"20000-29999\"");
                return;
            }

            range = (from, to);
        }

        var n = 0u;
        foreach (var (login, hash) in credentials[v.Key]!)
        {
            var index = n++;
            if (hash is null)
                continue;
            var name = pattern.Replace("{login}", login, StringComparison.Ordinal);
            if (pools.ContainsKey(name))
            {
                ctx.Error($"{path}:pool", $"pool '{name}' (login '{login}') is already a pool");
                continue;
            }

            uint uid, gid;
            if (range is { } r)
            {
                if (index > r.To - r.From)
                {
                    ctx.Error($"{path}:user", $"login '{login}' is login {index + 1} of {file}, beyond the {r.To - r.From + 1} uids of {user}");
                    continue;
                }

                uid = gid = r.From + index;
            }
            else if (!Users.TryGetUser(login, out uid, out gid))
            {
                ctx.Error($"{path}:user", $"login '{login}' of {file} has no passwd entry");
                continue;
            }

            readPool(template, name, path, (uid, gid));
        }
    }

    /// <summary>
    /// <c>"identity": "authenticated"</c>: the credentials file (read by <see cref="ReadTemplatePools"/>), the logins'
    /// pools (<c>"users"</c>: login → pool, or <c>"userTemplate"</c>), the realm and the limits on failed logins.
    /// TLS terminated by BouncyCastle (the dispatcher reads the first request and hands the session over), plain HTTP
    /// redirected only, no access or error log of its own (a log file belongs to one pool), pools of Dispatch's own
    /// worker (it verifies every request again), one login per pool.
    /// </summary>
    private static IdentityConfig? ReadIdentity(
        Context ctx,
        IConfigurationSection v,
        string name,
        Dictionary<string, PoolConfig> pools,
        Dictionary<string, IReadOnlyList<(string Login, string? Hash)>?> credentials,
        string tls,
        string engine,
        string http,
        string? docRoot)
    {
        var path = v.Path;
        if (v["identity"] != "authenticated")
        {
            ctx.Error($"{path}:identity", $"'{v["identity"]}' is not an identity mode (authenticated)");
            return null;
        }

        if (v["pool"] is not null)
            ctx.Error($"{path}:pool", "an identity vhost has no pool of its own: its logins' pools serve it (\"users\" or \"userTemplate\")");
        if (tls != TlsModes.Terminate)
            ctx.Error($"{path}:tls", "an identity vhost needs \"tls\": \"terminate\" (the dispatcher reads the credentials of the first request)");
        if (engine != TlsEngines.BouncyCastle)
            ctx.Error($"{path}:engine", "an identity vhost needs the bouncycastle engine (the session is handed to the login's worker after the first request)");
        if (http != HttpModes.Redirect)
            ctx.Error($"{path}:http", "an identity vhost refuses plain HTTP: only \"redirect\" is allowed");
        foreach (var key in new[] { "accessLog", "errorLog" })
        {
            if (v[key] is not null)
                ctx.Error($"{path}:{key}", "an identity vhost is served by one pool per login, and a log file belongs to one pool: log in the pools' own vhosts or the master's log");
        }

        if (v["credentials"] is null)
        {
            ctx.Error($"{path}:credentials", "required (an htpasswd file: login:bcrypt or SHA-crypt hash)");
            return null;
        }

        var realm = v["realm"] ?? name;
        if (realm.Length is 0 or > 128 || realm.Any(c => c < 0x20 || c > 0x7e || c is '"' or '\\'))
            ctx.Error($"{path}:realm", "1-128 printable ASCII characters without '\"' or '\\'");
        var limits = v.GetSection("loginLimits");
        ctx.Unknown(limits, limits.Path, ["perAddress", "perLogin", "window"]);
        var perAddress = ctx.Int(limits.GetSection("perAddress"), 10, 1, 1_000_000);
        var perLogin = ctx.Int(limits.GetSection("perLogin"), 20, 1, 1_000_000);
        var window = ctx.Duration(limits.GetSection("window"), TimeSpan.FromMinutes(1));
        if (!credentials.TryGetValue(v.Key, out var entries) || entries is null)
            return null;
        var hashes = entries.Where(e => e.Hash is not null).ToDictionary(e => e.Login, e => e.Hash!, StringComparer.Ordinal);
        var users = new List<IdentityLogin>();
        var table = v.GetSection("users");
        var template = v.GetSection("userTemplate");
        if (table.Exists() == template.Exists())
        {
            ctx.Error(path, "an identity vhost needs exactly one of \"users\" (login → pool) and \"userTemplate\"");
            return null;
        }

        if (table.Exists())
        {
            foreach (var u in table.GetChildren())
            {
                if (!BasicCredentials.IsValidLogin(u.Key))
                    ctx.Error(u.Path, $"'{u.Key}' is not a login");
                else if (u.Value is null || !pools.ContainsKey(u.Value))
                    ctx.Error(u.Path, $"no pool named '{u.Value}'");
                else if (entries.All(e => e.Login != u.Key))
                    ctx.Error(u.Path, $"login '{u.Key}' is not in {v["credentials"]}");
                else if (hashes.TryGetValue(u.Key, out var hash))
                    users.Add(new IdentityLogin(u.Key, hash, u.Value));
            }
        }
        else
        {
            var pattern = template["pool"] ?? "{login}";
            foreach (var (login, hash) in hashes)
            {
                var pool = pattern.Replace("{login}", login, StringComparison.Ordinal);
                if (pools.ContainsKey(pool))
                    users.Add(new IdentityLogin(login, hash, pool));
            }
        }

        foreach (var twice in users.GroupBy(u => u.Pool).Where(g => g.Count() > 1))
            ctx.Error($"{path}:users", $"pool '{twice.Key}' serves logins {string.Join(", ", twice.Select(u => u.Login))}: one login per pool (a worker runs as its login's own uid)");
        foreach (var u in users)
        {
            var pc = pools[u.Pool];
            if (pc.Program is not null)
                ctx.Error($"{path}:users", $"pool '{u.Pool}' runs a program of its own: an identity vhost needs Dispatch's worker, which verifies every request again");
            if (docRoot is not null && Directory.Exists(docRoot) && PathSafety.CheckTraversable(System.IO.Path.GetDirectoryName(docRoot.TrimEnd('/')) ?? "/", pc.Uid, [pc.Gid, .. pc.Groups]) is { } why)
                ctx.Error($"{path}:root", $"pool '{u.Pool}' cannot reach its document root: {why}");
        }

        return new IdentityConfig(System.IO.Path.GetFullPath(v["credentials"]!), realm, users, perAddress, perLogin, window);
    }

    private static readonly (string Key, byte Resource)[] LimitNames =
    [
        ("nofile", Libc.RLIMIT_NOFILE), ("nproc", Libc.RLIMIT_NPROC), ("as", Libc.RLIMIT_AS), ("cpu", Libc.RLIMIT_CPU), ("fsize", Libc.RLIMIT_FSIZE),
    ];

    /// <summary>The "limits" module: rlimits set in stage 1 (soft = hard), nofile also accepted at the pool's top level.</summary>
    private static List<Dispatch.Protocol.Wire.ResourceLimit> ReadLimits(Context ctx, IConfigurationSection pool)
    {
        var section = pool.GetSection("limits");
        ctx.Unknown(section, section.Path, [.. LimitNames.Select(l => l.Key)]);
        var limits = new List<Dispatch.Protocol.Wire.ResourceLimit>();
        foreach (var (key, resource) in LimitNames)
        {
            var value = section.GetSection(key);
            if (!value.Exists() && key == "nofile")
                value = pool.GetSection("nofile");
            var v = ctx.ULong(value, key == "nofile" ? 65536UL : 0UL);
            if (v > 0)
                limits.Add(new Dispatch.Protocol.Wire.ResourceLimit(resource, v, v));
        }

        return limits;
    }

    /// <summary>
    /// The built-in chroot module: <c>"chroot": true</c>, or an object with <c>tmpSize</c> (the private
    /// /tmp, e.g. "64M"; default 16M), <c>extraReadOnly</c> and <c>writable</c> (absolute paths bound at
    /// their own place). Absent or false: no chroot. Whether the machine allows the mounts (CAP_SYS_ADMIN)
    /// shows only when a worker starts.
    /// </summary>
    private static ChrootConfig? ReadChroot(Context ctx, IConfigurationSection pool)
    {
        // An empty object has neither a value nor children: it is listed among the pool's keys only.
        var section = pool.GetChildren().FirstOrDefault(c => c.Key.Equals("chroot", StringComparison.OrdinalIgnoreCase));
        if (section is null)
            return null;
        if (section.Value is { Length: > 0 } flag)
        {
            if (!bool.TryParse(flag, out var on))
            {
                ctx.Error(section.Path, $"'{flag}' is neither true, false nor an object with tmpSize, extraReadOnly, writable");
                return null;
            }

            return on ? new ChrootConfig(DefaultChrootTmp, [], []) : null;
        }

        ctx.Unknown(section, section.Path, ["tmpSize", "extraReadOnly", "writable"]);
        var tmp = DefaultChrootTmp;
        if (section["tmpSize"] is { } size && !TryParseSize(size, out tmp))
            ctx.Error($"{section.Path}:tmpSize", $"'{size}' is not a size from 64k to 64G such as 512k, 64M or 1G");
        List<string> Paths(string key)
        {
            var list = new List<string>();
            foreach (var c in section.GetSection(key).GetChildren())
            {
                var v = c.Value;
                if (v is null || !System.IO.Path.IsPathRooted(v) || v.Split('/').Any(part => part is "." or ".."))
                    ctx.Error(c.Path, $"'{v}' is not an absolute path without . or .. components");
                else if (System.IO.Path.GetFullPath(v) == "/")
                    ctx.Error(c.Path, "binding / into the chroot would undo it");
                else if (!File.Exists(v) && !Directory.Exists(v))
                    ctx.Error(c.Path, $"'{v}' does not exist");
                else
                    list.Add(System.IO.Path.GetFullPath(v).TrimEnd('/'));
            }

            return list;
        }

        var readOnly = Paths("extraReadOnly");
        var writable = Paths("writable");
        foreach (var both in readOnly.Intersect(writable, StringComparer.Ordinal))
            ctx.Error($"{section.Path}:writable", $"'{both}' is listed both read-only and writable");
        return new ChrootConfig(tmp, readOnly, writable);
    }

    private const ulong DefaultChrootTmp = 16UL << 20;

    private static bool TryParseSize(string text, out ulong bytes)
    {
        bytes = 0;
        var t = text.Trim();
        var shift = t.Length > 0 ? char.ToUpperInvariant(t[^1]) switch { 'K' => 10, 'M' => 20, 'G' => 30, _ => 0 } : 0;
        var digits = shift == 0 ? t : t[..^1];
        if (!ulong.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n > (64UL << 30) >> shift)
            return false;
        bytes = n << shift;
        return bytes is >= 64UL << 10 and <= 64UL << 30;
    }

    private static List<Dispatch.Protocol.Wire.ModuleSpec> ReadModules(Context ctx, IConfigurationSection pool, Dictionary<string, Dispatch.Protocol.Modules.PrivilegeModule> modules)
    {
        var list = new List<Dispatch.Protocol.Wire.ModuleSpec>();
        foreach (var m in pool.GetSection("modules").GetChildren())
        {
            if (!modules.TryGetValue(m.Key, out var module))
            {
                ctx.Error(m.Path, $"no module named '{m.Key}' in the top-level \"modules\" section (or it was refused)");
                continue;
            }

            var json = ToJson(m).ToJsonString(ModuleJson);
            var problem = module.Validate(json);
            if (problem is not null)
                ctx.Error(m.Path, $"module '{m.Key}' ({module.Library}) refused pool {pool.Key}'s settings: {problem}");
            list.Add(new Dispatch.Protocol.Wire.ModuleSpec(module.Library, m.Key, json));
        }

        return list;
    }

    /// <summary>A module's settings as it receives them: compact, UTF-8 characters and '"' as they are (no \u escapes beyond JSON's own).</summary>
    private static readonly System.Text.Json.JsonSerializerOptions ModuleJson = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>A configuration section as JSON (objects and string values, as IConfiguration holds them).</summary>
    private static System.Text.Json.Nodes.JsonNode ToJson(IConfigurationSection section)
    {
        var children = section.GetChildren().ToList();
        if (children.Count == 0)
            return System.Text.Json.Nodes.JsonValue.Create(section.Value ?? string.Empty)!;
        var o = new System.Text.Json.Nodes.JsonObject();
        foreach (var c in children)
            o[c.Key] = ToJson(c);
        return o;
    }

    /// <summary>landlock.connectTcp: TCP ports 1-65535 the pool's workers (and their CGI scripts) may connect to.</summary>
    private static List<ushort> ReadPorts(Context ctx, IConfigurationSection section)
    {
        var ports = new List<ushort>();
        if (section.Value is not null)
        {
            ctx.Error(section.Path, "a list of TCP ports such as [5432, 6379]");
            return ports;
        }

        foreach (var c in section.GetChildren())
        {
            if (c.Value is null || !ushort.TryParse(c.Value, NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port == 0)
                ctx.Error(c.Path, $"'{c.Value}' is not a TCP port (1-65535)");
            else if (!ports.Contains(port))
                ports.Add(port);
        }

        return ports;
    }

    private static readonly string[] ProxyMappingKeys = ["upstream", "connectTimeout", "readTimeout"];

    /// <summary>
    /// Reverse-proxy mappings: a URL prefix to the tenant's app on a Unix socket or a loopback port. Each prefix maps to
    /// an upstream string or to an object { upstream, connectTimeout, readTimeout }; "connectTimeout" and "readTimeout"
    /// beside the prefixes are the vhost's defaults, and "upstream" beside them is the prefix "/".
    /// </summary>
    private static List<ProxyMappingConfig> ReadProxy(Context ctx, IConfigurationSection vhost, List<(string Prefix, string Dir)> cgi)
    {
        var list = new List<ProxyMappingConfig>();
        var section = vhost.GetSection("proxy");
        if (section.Value is not null)
        {
            ctx.Error(section.Path, "an object such as { \"/app/\": \"unix:/srv/a/run/app.sock\" }");
            return list;
        }

        var connectDefault = ctx.Duration(section.GetSection("connectTimeout"), TimeSpan.FromMilliseconds(ProxyRoute.DefaultConnectTimeoutMs));
        var readDefault = ctx.Duration(section.GetSection("readTimeout"), TimeSpan.FromMilliseconds(ProxyRoute.DefaultReadTimeoutMs));
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
            else if (cgi.Any(c => c.Prefix.StartsWith(prefix, StringComparison.Ordinal) || prefix.StartsWith(c.Prefix, StringComparison.Ordinal)))
                ctx.Error(p.Path, $"'{prefix}' overlaps a CGI prefix of the same vhost");
            else if (list.Any(m => m.UrlPrefix == prefix))
                ctx.Error(p.Path, $"'{prefix}' is mapped twice");
            else
                list.Add(new ProxyMappingConfig(prefix, upstream, connect, read));
        }

        return list;
    }

    /// <summary>The "cgroup" setting of a pool: memoryMax, cpuMax, pidsMax (absent: no group).</summary>
    private static Dispatch.Protocol.Hosting.CgroupLimits? ReadCgroupLimits(Context ctx, IConfigurationSection pool)
    {
        var section = pool.GetSection("cgroup");
        if (!section.Exists())
            return null;
        ctx.Unknown(section, section.Path, ["memoryMax", "cpuMax", "pidsMax"]);
        if (section.Value is not null)
        {
            ctx.Error(section.Path, "an object such as { \"memoryMax\": \"256M\", \"cpuMax\": \"50%\", \"pidsMax\": 64 }");
            return null;
        }

        T? Read<T>(string key, Func<string, (T? Value, string? Error)> parse)
        {
            var s = section.GetSection(key);
            if (s.Value is null)
            {
                if (s.GetChildren().Any())
                    ctx.Error(s.Path, "a single value, not an object or array");
                return default;
            }

            var (value, error) = parse(s.Value);
            if (error is not null)
                ctx.Error(s.Path, error);
            return value;
        }

        var limits = new Dispatch.Protocol.Hosting.CgroupLimits(
            Read<ulong?>("memoryMax", Dispatch.Protocol.Hosting.CgroupLimits.ParseMemory),
            Read<Dispatch.Protocol.Hosting.CpuMax?>("cpuMax", Dispatch.Protocol.Hosting.CgroupLimits.ParseCpu),
            Read<ulong?>("pidsMax", Dispatch.Protocol.Hosting.CgroupLimits.ParsePids));
        if (!IsCgroupName(pool.Key))
            ctx.Error(section.Path, $"pool '{pool.Key}' cannot name a cgroup: its name is that of a cgroup interface file (or '.'/'..')");
        return limits;
    }

    private static readonly string[] CgroupFilePrefixes = ["cgroup", "memory", "cpu", "cpuacct", "cpuset", "pids", "io", "blkio", "devices", "freezer", "hugetlb", "net_cls", "net_prio", "perf_event", "rdma", "misc"];

    /// <summary>A pool's group directory sits next to the parent group's interface files: no name of one.</summary>
    private static bool IsCgroupName(string name) =>
        name is not ("." or ".." or "tasks" or "notify_on_release" or "release_agent")
        && !(name.Contains('.', StringComparison.Ordinal) && CgroupFilePrefixes.Contains(name[..name.IndexOf('.', StringComparison.Ordinal)]));

    private static bool IsCgroupPath(string path)
    {
        var parts = path.Split('/');
        var names = path.StartsWith('/') ? parts[1..] : parts;
        if (path == "/")
            return true;
        return path.Length <= 1024 && names.Length > 0 && names.All(n => n.Length > 0 && IsCgroupName(n) && n.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '@'));
    }

    private static bool IsPoolName(string name) =>
        name.Length is > 0 and <= 64 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    private sealed class Context(string file, List<ConfigError> errors, Dictionary<string, string>? sources = null)
    {
        /// <summary>An error at a JSON path, in the file that defined it (the main file, or an included one).</summary>
        public void Error(string path, string reason) => errors.Add(new ConfigError(FileOf(path), path, reason));

        private string FileOf(string path)
        {
            if (sources is null)
                return file;
            var parts = path.Split(':', 3);
            return parts.Length >= 2 && sources.TryGetValue($"{parts[0]}:{parts[1]}", out var source) ? source : file;
        }

        public void Unknown(IConfiguration section, string path, string[] known)
        {
            foreach (var child in section.GetChildren())
            {
                if (!known.Contains(child.Key, StringComparer.OrdinalIgnoreCase))
                    Error(path.Length == 0 ? child.Key : $"{path}:{child.Key}", $"unknown setting (expected one of: {string.Join(", ", known)})");
            }
        }

        public (uint Uid, uint Gid) Identity(IConfigurationSection section, string path)
        {
            var user = section["user"];
            if (user is null)
            {
                Error($"{path}:user", "required (a user name or a numeric uid)");
                return (0, 0);
            }

            uint uid, primaryGid;
            if (uint.TryParse(user, NumberStyles.None, CultureInfo.InvariantCulture, out uid))
            {
                primaryGid = uid;
            }
            else if (!Users.TryGetUser(user, out uid, out primaryGid))
            {
                Error($"{path}:user", $"no user named '{user}'");
                return (0, 0);
            }

            var group = section["group"];
            if (group is null)
                return (uid, primaryGid);
            return (uid, ResolveGroup(group, $"{path}:group") ?? 0);
        }

        public uint? ResolveGroup(string? group, string path)
        {
            if (group is null)
            {
                Error(path, "empty group");
                return null;
            }

            if (uint.TryParse(group, NumberStyles.None, CultureInfo.InvariantCulture, out var gid))
                return gid;
            if (Users.TryGetGroup(group, out gid))
                return gid;
            Error(path, $"no group named '{group}'");
            return null;
        }

        public TimeSpan Duration(IConfigurationSection s, TimeSpan fallback)
        {
            if (s.Value is null)
                return fallback;
            var v = s.Value.Trim();
            (string num, double scale) = v.EndsWith("ms", StringComparison.Ordinal) ? (v[..^2], 0.001)
                : v.EndsWith('s') ? (v[..^1], 1)
                : v.EndsWith('m') ? (v[..^1], 60)
                : (v, 1);
            if (double.TryParse(num, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && d > 0 && d * scale <= 86400)
                return TimeSpan.FromSeconds(d * scale);
            Error(s.Path, $"'{s.Value}' is not a duration such as 500ms, 10s or 2m");
            return fallback;
        }

        public int Int(IConfigurationSection s, int fallback, int min, int max) =>
            Number(s, fallback, min, max, NumberStyles.Integer, $"an integer in {min}..{max}");

        public uint UInt(IConfigurationSection s, uint fallback) =>
            Number(s, fallback, uint.MinValue, uint.MaxValue, NumberStyles.None, "a non-negative integer");

        public ulong ULong(IConfigurationSection s, ulong fallback) =>
            Number(s, fallback, 1UL, ulong.MaxValue, NumberStyles.None, "a positive integer");

        /// <summary>A number in [min, max], or the fallback when absent; anything else is an error naming what was expected.</summary>
        private T Number<T>(IConfigurationSection s, T fallback, T min, T max, NumberStyles style, string expected)
            where T : System.Numerics.INumber<T>
        {
            if (s.Value is null)
                return fallback;
            if (T.TryParse(s.Value, style, CultureInfo.InvariantCulture, out var v) && v >= min && v <= max)
                return v;
            Error(s.Path, $"'{s.Value}' is not {expected}");
            return fallback;
        }

        public bool Bool(IConfigurationSection s, bool fallback)
        {
            if (s.Value is null)
                return fallback;
            if (bool.TryParse(s.Value, out var v))
                return v;
            Error(s.Path, $"'{s.Value}' is not true or false");
            return fallback;
        }
    }
}

/// <summary>User and group names through the C library (the master runs as root, before any jail).</summary>
internal static unsafe class Users
{
    public static bool TryGetUser(string name, out uint uid, out uint gid)
    {
        var buffer = stackalloc byte[16384];
        Libc.PasswdEntry entry;
        Libc.PasswdEntry* result;
        if (Libc.GetPwNamR(name, &entry, buffer, 16384, &result) == 0 && result != null)
        {
            uid = entry.Uid;
            gid = entry.Gid;
            return true;
        }

        uid = gid = 0;
        return false;
    }

    public static bool TryGetGroup(string name, out uint gid)
    {
        var buffer = stackalloc byte[16384];
        Libc.GroupEntry entry;
        Libc.GroupEntry* result;
        if (Libc.GetGrNamR(name, &entry, buffer, 16384, &result) == 0 && result != null)
        {
            gid = entry.Gid;
            return true;
        }

        gid = 0;
        return false;
    }
}
