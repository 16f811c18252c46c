namespace Dispatch.Master.Config;

/// <summary>One problem in a config file: where (file, line when known, and JSON path) and why.</summary>
internal sealed record ConfigError(string File, string Path, string Reason)
{
    /// <summary>The line of the setting in <see cref="File"/> (or of the nearest enclosing one the file has); null: not known (<see cref="ConfigLines"/>).</summary>
    public int? Line { get; init; }

    /// <summary><c>file:line: path: reason</c> (as compilers and <c>nginx -t</c> point at a line), or <c>file: path: reason</c> without a line.</summary>
    public override string ToString() => $"{File}{(Line is { } line ? $":{line}" : string.Empty)}: {(Path.Length == 0 ? "(root)" : Path)}: {Reason}";
}
