namespace Dispatch.Master.Config;

/// <param name="Format">The file's format: text, or json (one Serilog JSON object per line, properties included).</param>
/// <param name="Console">The console's format: text, json or none.</param>
internal sealed record LogConfig(string Level, string? File, string Format = "text", string Console = "text");
