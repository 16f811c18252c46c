using System.Globalization;
using Dispatch.Master.Files;
using Dispatch.Platform.Interop;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>
/// One pool (<c>pools:NAME</c>, or a pool made from an identity vhost's <c>userTemplate</c>): identity, groups, Landlock,
/// limits, modules, program, cgroup, chroot and timeouts. Checks that need the other pools' vhosts are in <see cref="CrossChecks"/>.
/// </summary>
internal static class PoolSection
{
    public static readonly string[] Keys = ["user", "group", "groups", "maxWorkers", "nofile", "landlock", "minSpare", "idleTimeout", "oneShot", "maxConnectionsPerWorker", "limits", "modules", "program", "cgroup", "chroot", "tlsHandOff", "timeouts"];
    public static readonly string[] TemplateKeys = [.. Keys.Where(k => k is not "user" and not "group"), "pool", "user"];

    /// <param name="forced">The uid and gid of a template pool's login (its section has no user or group of its own).</param>
    public static PoolConfig Read(
        ConfigContext ctx,
        IConfigurationSection p,
        string poolName,
        string poolPath,
        (uint Uid, uint Gid)? forced,
        SecurityConfig security,
        DispatcherConfig dispatcher,
        IReadOnlyDictionary<string, Dispatch.Platform.Modules.PrivilegeModule> modules)
    {
        ctx.Unknown(p, poolPath, forced is null ? Keys : TemplateKeys);
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

        var pool = new PoolConfig(
            poolName, uid, gid, groups,
            ctx.Int(p.GetSection("maxWorkers"), 4, 1, 1024),
            AbsolutePaths(landlock.GetSection("read")),
            landlock.GetSection("exec").Exists() ? [.. AbsolutePaths(landlock.GetSection("exec"))] : null,
            ctx.Int(p.GetSection("minSpare"), 0, 0, 1024),
            ctx.Duration(p.GetSection("idleTimeout"), TimeSpan.FromSeconds(60)),
            ctx.Bool(p.GetSection("oneShot"), false),
            ctx.Int(p.GetSection("maxConnectionsPerWorker"), 0, 0, 1_000_000),
            ReadLimits(ctx, p),
            ReadModules(ctx, p, modules),
            p["program"],
            CgroupSection.ReadLimits(ctx, p),
            AbsolutePaths(landlock.GetSection("write")).Select(w => w.TrimEnd('/') is { Length: > 0 } t ? t : "/").ToList(),
            ReadPorts(ctx, landlock.GetSection("connectTcp")),
            ChrootSection.Read(ctx, p),
            landlockOn,
            ctx.Bool(p.GetSection("tlsHandOff"), false))
        {
            Timeouts = ReadTimeouts(ctx, p),
        };
        if (pool.TlsHandOff && p["program"] is null)
            ctx.Error($"{poolPath}:tlsHandOff", "only a pool with \"program\" declares this (whether Dispatch's own worker takes handed TLS sessions is built in)");
        if (!landlockOn && pool.Chroot is null)
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
        if (pool.MinSpare > pool.MaxWorkers)
            ctx.Error($"{poolPath}:minSpare", $"{pool.MinSpare} spares exceed maxWorkers {pool.MaxWorkers}");
        return pool;
    }

    /// <summary>A pool's "timeouts": its workers' send, keep-alive and request-header timeouts and Kestrel's minimum data rates.</summary>
    private static Dispatch.Wire.Payloads.WorkerTimeouts ReadTimeouts(ConfigContext ctx, IConfigurationSection pool)
    {
        var section = pool.GetSection("timeouts");
        ctx.Unknown(section, section.Path, ["send", "keepAlive", "requestHeaders", "minRequestBodyRate", "minResponseRate"]);
        var d = Dispatch.Wire.Payloads.WorkerTimeouts.Default;
        return new Dispatch.Wire.Payloads.WorkerTimeouts(
            ctx.Duration(section.GetSection("send"), d.Send),
            ctx.Duration(section.GetSection("keepAlive"), d.KeepAlive),
            ctx.Duration(section.GetSection("requestHeaders"), d.RequestHeaders),
            ctx.Int(section.GetSection("minRequestBodyRate"), d.MinRequestBodyRate, 0, 1 << 30),
            ctx.Int(section.GetSection("minResponseRate"), d.MinResponseRate, 0, 1 << 30));
    }

    private static readonly (string Key, byte Resource)[] LimitNames =
    [
        ("nofile", Libc.RLIMIT_NOFILE), ("nproc", Libc.RLIMIT_NPROC), ("as", Libc.RLIMIT_AS), ("cpu", Libc.RLIMIT_CPU), ("fsize", Libc.RLIMIT_FSIZE),
    ];

    /// <summary>
    /// The "limits" module: rlimits set in stage 1 (soft = hard). nofile is also accepted at the pool's top level (the
    /// same limit, default 65536); giving it in both places is an error.
    /// </summary>
    private static List<Dispatch.Wire.ResourceLimit> ReadLimits(ConfigContext ctx, IConfigurationSection pool)
    {
        var section = pool.GetSection("limits");
        ctx.Unknown(section, section.Path, [.. LimitNames.Select(l => l.Key)]);
        var limits = new List<Dispatch.Wire.ResourceLimit>();
        foreach (var (key, resource) in LimitNames)
        {
            var value = section.GetSection(key);
            if (key == "nofile" && pool.GetSection("nofile").Exists())
            {
                if (value.Exists())
                    ctx.Error(value.Path, $"nofile is also given at the pool's top level ({pool.GetSection("nofile").Path}): give it once");
                else
                    value = pool.GetSection("nofile");
            }

            var v = ctx.ULong(value, key == "nofile" ? 65536UL : 0UL);
            if (v > 0)
                limits.Add(new Dispatch.Wire.ResourceLimit(resource, v, v));
        }

        return limits;
    }

    /// <summary>
    /// The built-in chroot module: <c>"chroot": true</c>, or an object with <c>tmpSize</c> (the private
    /// /tmp, e.g. "64M"; default 16M), <c>extraReadOnly</c> and <c>writable</c> (absolute paths bound at


    private static List<Dispatch.Wire.ModuleSpec> ReadModules(ConfigContext ctx, IConfigurationSection pool, IReadOnlyDictionary<string, Dispatch.Platform.Modules.PrivilegeModule> modules)
    {
        var list = new List<Dispatch.Wire.ModuleSpec>();
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
            list.Add(new Dispatch.Wire.ModuleSpec(module.Library, m.Key, json));
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
    private static List<ushort> ReadPorts(ConfigContext ctx, IConfigurationSection section)
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

    private static bool IsPoolName(string name) =>
        name.Length is > 0 and <= 64 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');
}
