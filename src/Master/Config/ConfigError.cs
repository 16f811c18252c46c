namespace Dispatch.Master.Config;

/// <summary>One problem in a config file: where (file and JSON path) and why.</summary>
internal sealed record ConfigError(string File, string Path, string Reason)
{
    public override string ToString() => $"{File}: {(Path.Length == 0 ? "(root)" : Path)}: {Reason}";
}
