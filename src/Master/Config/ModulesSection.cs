using Dispatch.Platform.Modules;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>
/// The top-level <c>modules</c>: third-party privilege modules (native shared libraries, docs/modules.md), loaded (checked)
/// once here; each pool's settings for them are validated by the module in <see cref="PoolSection"/>.
/// </summary>
internal static class ModulesSection
{
    public static Dictionary<string, PrivilegeModule> Read(ConfigContext ctx, IConfiguration root)
    {
        var modules = new Dictionary<string, PrivilegeModule>(StringComparer.Ordinal);
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
                modules[m.Key] = ModuleLoader.Load(library);
            }
            catch (ModuleException e)
            {
                ctx.Error($"{m.Path}:library", $"refused: {e.Message}");
            }
        }

        return modules;
    }
}
