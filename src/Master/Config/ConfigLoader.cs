using Dispatch.Wire.Payloads;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>
/// Reads the JSON config (Microsoft.Extensions.Configuration.Json) and validates all of it, collecting
/// every error with its JSON path, so that <c>check</c> lists them all at once like <c>nginx -t</c>.
/// One reader per section (<see cref="PoolSection"/>, <see cref="VhostSection"/>, ...), then the checks across
/// sections (<see cref="CrossChecks"/>); <c>run</c>, <c>check</c> and a reload all call <see cref="Load"/> and refuse
/// exactly when it returns errors.
/// </summary>
internal static class ConfigLoader
{
    // "$schema": the JSON Schema (docs/dispatch.schema.json) for editors; its value is not used.
    private static readonly string[] TopLevel = ["$schema", "listen", "dispatcher", "pools", "vhosts", "security", "log", "jailProbe", "defaultVhost", "limits", "modules", "control", "metrics", "reload", "cgroup", "include"];

    /// <summary>The config at <paramref name="path"/>, or every error found in it (each with its file, line and path).</summary>
    public static (DispatchConfig? Config, List<ConfigError> Errors) Load(string path)
    {
        var (config, errors) = LoadWithoutLines(path);
        return (config, errors.Count == 0 ? errors : ConfigLines.Annotate(errors));
    }

    private static (DispatchConfig? Config, List<ConfigError> Errors) LoadWithoutLines(string path)
    {
        var errors = new List<ConfigError>();
        var full = System.IO.Path.GetFullPath(path);
        if (ReadRoot(full, errors) is not { } read)
            return (null, errors);
        var (root, sources, included) = read;

        var ctx = new ConfigContext(full, errors, sources);
        ctx.Unknown(root, string.Empty, TopLevel);

        var security = new SecurityConfig(ctx.UInt(root.GetSection("security:minUid"), 1000));
        ctx.Unknown(root.GetSection("limits"), "limits", ["maxWorkers"]);
        var limits = new LimitsConfig(ctx.Int(root.GetSection("limits:maxWorkers"), 256, 1, 100_000));
        var log = LogSection.Read(ctx, root);
        var operations = OperationsSection.Read(ctx, root);
        var listen = ListenSection.Read(ctx, root);
        var dispatcher = DispatcherSection.Read(ctx, root);
        var modules = ModulesSection.Read(ctx, root);
        var cgroup = CgroupSection.Read(ctx, root);

        var pools = new Dictionary<string, PoolConfig>(StringComparer.Ordinal);
        var poolSection = root.GetSection("pools");
        var poolSections = new List<(IConfigurationSection Section, string Name, string Path)>();
        void ReadPool(IConfigurationSection p, string poolName, string poolPath, (uint Uid, uint Gid)? forced)
        {
            pools[poolName] = PoolSection.Read(ctx, p, poolName, poolPath, forced, security, dispatcher, modules);
            poolSections.Add((p, poolName, poolPath));
        }

        foreach (var p in poolSection.GetChildren())
            ReadPool(p, p.Key, p.Path, null);

        // Pools made from identity vhosts' templates: one per login, through the same checks as the explicit ones.
        var credentials = new Dictionary<string, IReadOnlyList<(string Login, string? Hash)>?>(StringComparer.Ordinal);
        foreach (var v in root.GetSection("vhosts").GetChildren())
            TemplatePools.Read(ctx, v, pools, credentials, ReadPool);
        if (pools.Count == 0 && !poolSection.GetChildren().Any())
            ctx.Error("pools", "at least one pool is required (or an identity vhost's userTemplate)");

        var vhosts = new Dictionary<string, VhostConfig>(StringComparer.Ordinal);
        var names = new HostMatcher<string>();
        var vhostSection = root.GetSection("vhosts");
        if (!vhostSection.GetChildren().Any())
            ctx.Error("vhosts", "at least one vhost is required");
        foreach (var v in vhostSection.GetChildren())
        {
            var vhost = VhostSection.Read(ctx, v, names, pools, credentials, dispatcher);
            vhosts[vhost.Name] = vhost;
        }

        CrossChecks.LogFiles(ctx, full, included, log, vhosts);
        CrossChecks.LandlockWrites(ctx, full, pools, poolSections, vhosts);
        CrossChecks.ConnectPorts(ctx, pools, vhosts);
        CrossChecks.Coalescing(vhosts);

        var defaultVhost = root["defaultVhost"] is { } dv ? HostNames.Normalize(dv) : null;
        if (defaultVhost is not null && !vhosts.ContainsKey(defaultVhost))
            ctx.Error("defaultVhost", $"no vhost named '{defaultVhost}'");

        CrossChecks.UnusedPools(ctx, pools, vhosts);
        CrossChecks.CgroupRequired(ctx, cgroup, pools);

        var probe = root.GetSection("jailProbe");
        var probePaths = probe.GetSection("paths").GetChildren().Select(c => c.Value ?? string.Empty).ToList();
        foreach (var (pp, i) in probePaths.Select((pp, i) => (pp, i)).Where(x => !System.IO.Path.IsPathRooted(x.pp)))
            ctx.Error($"jailProbe:paths:{i}", $"'{pp}' is not an absolute path");
        if (probePaths.Count > JailProbeConfig.MaxPaths)
            ctx.Error("jailProbe:paths", $"{probePaths.Count} paths: at most {JailProbeConfig.MaxPaths} (a child proves its jail on at most {Dispatch.Wire.JailProof.MaxProbes} paths, {Children.JailSpecs.MaxOwnProbes} of them the master's own: the config, /etc/passwd, other tenants' roots, keys, logs and write directories)");
        foreach (var (pp, i) in probePaths.Select((pp, i) => (pp, i)).Where(x => System.Text.Encoding.UTF8.GetByteCount(x.pp) > JailProbeConfig.MaxPathBytes))
            ctx.Error($"jailProbe:paths:{i}", $"{System.Text.Encoding.UTF8.GetByteCount(pp)} bytes: a probe path is at most {JailProbeConfig.MaxPathBytes} (PATH_MAX, what a child's set-up carries of one)");
        if (probePaths.Sum(pp => (long)System.Text.Encoding.UTF8.GetByteCount(pp)) is var probeBytes && probeBytes > JailProbeConfig.MaxTotalBytes)
            ctx.Error("jailProbe:paths", $"{probeBytes} bytes in all: at most {JailProbeConfig.MaxTotalBytes} (a child's probe list, sent in one {Dispatch.Wire.IpcChannel.MaxDatagram}-byte datagram, holds {Dispatch.Wire.JailProof.MaxProbeBytes} bytes of paths, {Children.JailSpecs.MaxOwnProbeBytes} of them the master's own)");
        var jailProbe = new JailProbeConfig(probePaths, ctx.Int(probe.GetSection("threads"), 2, 1, 256));

        CrossChecks.MetricsListener(ctx, operations.MetricsListen, listen);

        // Every check adds to errors before this one return: `run`, `check` and a reload all refuse
        // exactly when errors is not empty (a check after it would reach `check` only).
        if (errors.Count > 0)
            return (null, errors);

        return (new DispatchConfig(full, listen, dispatcher, pools, vhosts, defaultVhost, security, limits, log, jailProbe, cgroup, operations) { Included = included }, errors);
    }

    /// <summary>
    /// The file as configuration, with the include (conf.d) directory's vhosts and pools merged in (each remembered
    /// with its file, for errors); null when the file is missing or not JSON.
    /// </summary>
    private static (IConfigurationRoot Root, Dictionary<string, string>? Sources, IncludeDirectory.Summary? Included)? ReadRoot(string full, List<ConfigError> errors)
    {
        IConfigurationRoot root;
        try
        {
            if (!File.Exists(full))
            {
                errors.Add(new ConfigError(full, string.Empty, "file not found"));
                return null;
            }

            root = new ConfigurationBuilder()
                .AddJsonFile(full, optional: false, reloadOnChange: false)
                .Build();
        }
        catch (Exception e) when (e is FormatException or InvalidDataException or IOException or System.Text.Json.JsonException)
        {
            errors.Add(new ConfigError(full, string.Empty, $"not valid JSON: {e.InnerException?.Message ?? e.Message}"));
            return null;
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

        // No name, path or value has a use for U+0000, and the path APIs throw on one: refused here, by its path (a name
        // once, not once per setting under it).
        var ctx = new ConfigContext(full, errors, sources);
        var withNul = root.AsEnumerable()
            .Select(kv => NulAt(kv.Key, kv.Value))
            .Where(at => at is not null)
            .Distinct(StringComparer.Ordinal)
            .ToList();
        foreach (var at in withNul)
        {
            var what = at!.Contains('\0', StringComparison.Ordinal) ? "the name" : "the value";
            errors.Add(new ConfigError(ctx.FileOf(at), at.Replace("\0", "\\u0000", StringComparison.Ordinal), $"{what} contains a NUL character (\\u0000)"));
        }

        return withNul.Count > 0 ? null : (root, sources, included);
    }

    /// <summary>The path to the first name with a NUL in <paramref name="key"/>, else the key when its value has one, else null.</summary>
    private static string? NulAt(string key, string? value)
    {
        var nul = key.IndexOf('\0', StringComparison.Ordinal);
        if (nul >= 0)
        {
            var end = key.IndexOf(':', nul);
            return end < 0 ? key : key[..end];
        }

        return value?.Contains('\0', StringComparison.Ordinal) == true ? key : null;
    }
}
