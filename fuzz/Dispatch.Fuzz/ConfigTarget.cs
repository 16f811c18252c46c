using Dispatch.Master.Config;

namespace Dispatch.Fuzz;

/// <summary>
/// The master's config loader on an arbitrary file, as <c>Master check</c>, <c>run</c> and a reload call it (the input
/// written to a file of its own, then <see cref="ConfigLoader.Load"/>). Documented: a config, or errors that each name
/// a file, a path and a reason; never an exception. Errors and a config never come together (check would call it
/// rejected while run would start with it), and no config comes without errors' absence.
/// </summary>
internal sealed class ConfigTarget : IFuzzTarget
{
    private readonly string _path = Path.Combine(Directory.CreateTempSubdirectory("dispatch-fuzz-config-").FullName, "dispatch.json");

    public string Name => "config";

    public string Description => "ConfigLoader.Load on an arbitrary JSON file";

    public void Run(ReadOnlySpan<byte> data)
    {
        using (var file = File.Create(_path))
            file.Write(data);
        var (config, errors) = ConfigLoader.Load(_path);
        if ((config is null) != (errors.Count > 0))
            throw new FuzzFindingException($"Load returned {(config is null ? "no config" : "a config")} with {errors.Count} error(s): {string.Join("; ", errors)}");
        foreach (var e in errors)
        {
            if (string.IsNullOrEmpty(e.Reason) || string.IsNullOrEmpty(e.File))
                throw new FuzzFindingException($"an error without a file or a reason: {e}");
        }
    }
}
