using System.Runtime.InteropServices;
using System.Text.Json;
using Dispatch.Protocol.Modules;

namespace Dispatch.Example;

/// <summary>
/// An example third-party privilege module: sets the workers' file-creation mask, so files a
/// tenant's CGI scripts create are not readable by others. Pool settings: <c>{ "umask": "027" }</c>.
/// </summary>
public sealed partial class UmaskModule : IPrivilegeModule
{
    public IReadOnlyList<string> Validate(string pool, JsonElement settings) =>
        TryParse(settings, out _, out var problem) ? [] : [problem];

    public void Apply(string pool, JsonElement settings)
    {
        if (!TryParse(settings, out var mask, out var problem))
            throw new InvalidOperationException(problem);
        _ = SetUmask(mask);
    }

    private static bool TryParse(JsonElement settings, out uint mask, out string problem)
    {
        mask = 0;
        problem = string.Empty;
        if (settings.ValueKind != JsonValueKind.Object || !settings.TryGetProperty("umask", out var value) || value.ValueKind != JsonValueKind.String)
        {
            problem = "expects { \"umask\": \"027\" }";
            return false;
        }

        var text = value.GetString()!;
        if (text.Length is < 3 or > 4 || !text.All(c => c is >= '0' and <= '7'))
        {
            problem = $"umask '{text}' is not three or four octal digits";
            return false;
        }

        mask = Convert.ToUInt32(text, 8);
        return true;
    }

    [LibraryImport("libc", EntryPoint = "umask")]
    private static partial uint SetUmask(uint mask);
}
