using Dispatch.Master.Files;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>
/// The <c>include</c> directory (conf.d style, as hosting panels write it): every <c>*.json</c> file in
/// it, in name order, holds a <c>vhosts</c> and/or <c>pools</c> section merged into the main config. A
/// name defined twice is an error naming both files. Files are parsed again only when they changed
/// (inode, size or modification time), so a reload of thousands of files reads only the edited ones.
/// The directory and every file must be root's and writable by no one else: the master reads them as root.
/// </summary>
internal static class IncludeDirectory
{
    public const int MaxFiles = 100_000;
    public const long MaxFileBytes = 1 << 20;
    private static readonly string[] Sections = ["vhosts", "pools"];
    private static readonly Lock Gate = new();
    private static readonly Dictionary<string, Entry> Cache = new(StringComparer.Ordinal);

    private sealed record Entry(ulong Dev, ulong Ino, long Size, long MtimeTicks, KeyValuePair<string, string?>[] Pairs, string? Error);

    /// <summary>What the last read saw: files in all, and how many were parsed again.</summary>
    public sealed record Summary(string Directory, int Files, int Added, int Changed, int Removed)
    {
        public override string ToString() => $"{Directory}: {Files} files ({Added} added, {Changed} changed, {Removed} removed)";
    }

    /// <summary>
    /// Reads the directory: the merged key/value pairs, the file each top-level vhost or pool came from
    /// ("vhosts:NAME" → file), and the errors (with their file). <paramref name="taken"/> are the vhost
    /// and pool names of the main file.
    /// </summary>
    public static (List<KeyValuePair<string, string?>> Pairs, Dictionary<string, string> Sources, Summary Summary) Read(
        string directory, IReadOnlySet<string> taken, List<ConfigError> errors, string mainFile)
    {
        var pairs = new List<KeyValuePair<string, string?>>();
        var sources = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var name in taken)
            sources[name] = mainFile;
        if (PathSafety.CheckRootOwned(directory) is { } unsafeDir)
        {
            errors.Add(new ConfigError(mainFile, "include", $"the include directory must be root's and writable by no one else: {unsafeDir}"));
            return (pairs, sources, new Summary(directory, 0, 0, 0, 0));
        }

        string[] files;
        try
        {
            files = [.. Directory.EnumerateFiles(directory, "*.json", new EnumerationOptions { RecurseSubdirectories = false, AttributesToSkip = FileAttributes.Hidden, MatchCasing = MatchCasing.CaseSensitive })
                .Order(StringComparer.Ordinal)];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            errors.Add(new ConfigError(mainFile, "include", $"cannot list '{directory}': {e.Message}"));
            return (pairs, sources, new Summary(directory, 0, 0, 0, 0));
        }

        if (files.Length > MaxFiles)
        {
            errors.Add(new ConfigError(mainFile, "include", $"{files.Length} files exceed the limit of {MaxFiles}"));
            return (pairs, sources, new Summary(directory, files.Length, 0, 0, 0));
        }

        int added = 0, changed = 0, removed;
        lock (Gate)
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var file in files)
            {
                seen.Add(file);
                var entry = Stat(file, out var statError);
                if (entry is null)
                {
                    errors.Add(new ConfigError(file, string.Empty, statError!));
                    continue;
                }

                if (Cache.TryGetValue(file, out var cached) && cached.Dev == entry.Dev && cached.Ino == entry.Ino && cached.Size == entry.Size && cached.MtimeTicks == entry.MtimeTicks)
                {
                    entry = cached;
                }
                else
                {
                    if (cached is null)
                        added++;
                    else
                        changed++;
                    entry = Parse(file, entry);
                    Cache[file] = entry;
                }

                if (entry.Error is not null)
                {
                    errors.Add(new ConfigError(file, string.Empty, entry.Error));
                    continue;
                }

                // Top-level names this file defines: each may be defined once across the main file and conf.d.
                var defined = entry.Pairs.Select(p => p.Key.Split(':')).Where(k => k.Length >= 2).Select(k => $"{k[0]}:{k[1]}").Distinct(StringComparer.OrdinalIgnoreCase).ToList();
                var clash = defined.FirstOrDefault(sources.ContainsKey);
                if (clash is not null)
                {
                    errors.Add(new ConfigError(file, clash, $"already defined in {sources[clash]}"));
                    continue;
                }

                foreach (var d in defined)
                    sources[d] = file;
                pairs.AddRange(entry.Pairs);
            }

            var gone = Cache.Keys.Where(k => k.StartsWith(directory.TrimEnd('/') + "/", StringComparison.Ordinal) && !seen.Contains(k)).ToList();
            removed = gone.Count;
            foreach (var g in gone)
                Cache.Remove(g);
        }

        return (pairs, sources, new Summary(directory, files.Length, added, changed, removed));
    }

    private static unsafe Entry? Stat(string file, out string? error)
    {
        Dispatch.Platform.Interop.Libc.Stat st;
        if (Dispatch.Platform.Interop.Libc.LStat(file, &st) != 0)
        {
            error = $"cannot stat: {Dispatch.Platform.Interop.Libc.Describe(Dispatch.Platform.Interop.Libc.LastError)}";
            return null;
        }

        error = (st.Mode & Dispatch.Platform.Interop.Libc.S_IFMT) != Dispatch.Platform.Interop.Libc.S_IFREG ? "not a regular file (symlinks are not followed)"
            : st.Uid != 0 ? $"owned by uid {st.Uid}, not root"
            : (st.Mode & 0x12) != 0 ? "writable by group or others"
            : st.Size > MaxFileBytes ? $"{st.Size} bytes exceed the limit of {MaxFileBytes}"
            : null;
        if (error is not null)
            return null;
        // Modification time from .NET (the Stat struct names only the fields read elsewhere).
        return new Entry(st.Dev, st.Ino, st.Size, File.GetLastWriteTimeUtc(file).Ticks, [], null);
    }

    private static Entry Parse(string file, Entry stat)
    {
        try
        {
            var root = new ConfigurationBuilder().AddJsonFile(file, optional: false, reloadOnChange: false).Build();
            var unknown = root.GetChildren().Select(c => c.Key).Where(k => !Sections.Contains(k, StringComparer.OrdinalIgnoreCase)).ToList();
            if (unknown.Count > 0)
                return stat with { Error = $"'{unknown[0]}': an included file may hold only \"vhosts\" and \"pools\"" };
            return stat with { Pairs = [.. root.AsEnumerable().Where(kv => kv.Value is not null)] };
        }
        catch (Exception e) when (e is FormatException or InvalidDataException or IOException or System.Text.Json.JsonException)
        {
            return stat with { Error = $"not valid JSON: {e.InnerException?.Message ?? e.Message}" };
        }
    }
}
