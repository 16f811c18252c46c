using Dispatch.Master.Files;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>The master's <c>log</c>: level, file and the formats of the file and the console.</summary>
internal static class LogSection
{
    public static LogConfig Read(ConfigContext ctx, IConfiguration root)
    {
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
        else if (log.File is not null && System.IO.Path.GetFileName(log.File).Length == 0)
            ctx.Error("log:file", $"'{log.File}' names a directory, not a file");
        else if (log.File is not null && PathSafety.CheckRootOwned(System.IO.Path.GetDirectoryName(log.File)!) is { } logDirProblem)
            ctx.Error("log:file", $"the master's log must live in a root-owned directory no one else can write: {logDirProblem}");

        return log;
    }
}
