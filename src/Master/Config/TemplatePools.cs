using System.Globalization;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>The pools an identity vhost's <c>userTemplate</c> makes, one per login.</summary>
internal static class TemplatePools
{

    /// <summary>
    /// An identity vhost's <c>"userTemplate"</c>: a pool per enabled login of its credentials file, named by
    /// <c>"pool"</c> (default <c>{login}</c>), running as the login's passwd entry (<c>"user": "passwd"</c>) or as
    /// the uid (and gid) <c>FROM + n</c> of a range (<c>"user": "20000-29999"</c>, n the login's line among the file's
    /// logins, counting disabled ones), with every other pool setting of the template, through the same checks as an
    /// explicit pool. The credentials file is read here once per vhost and kept for <see cref="IdentitySection.Read"/>.
    /// </summary>
    public static void Read(
        ConfigContext ctx,
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
}
