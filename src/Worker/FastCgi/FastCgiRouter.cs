using Dispatch.Worker.Http;

namespace Dispatch.Worker.FastCgi;

/// <summary>
/// Front-controller routing, in the spirit of nginx's <c>try_files</c> (see docs/fastcgi.md):
/// <list type="number">
/// <item>With FastCGI, a path whose first segment ending in <c>.php</c> names an existing file under the root runs that
/// script (the rest of the path is PATH_INFO: <c>/a.php/x</c>); a missing script is 404 — PHP source is never served.</item>
/// <item>With <c>tryFiles</c>, each <c>$uri</c> (an existing file: served statically) and <c>$uri/</c> (an existing
/// directory with an index file: the index — run when it is PHP — or a listing when enabled) in order; a directory
/// with neither falls through to the next entry.</item>
/// <item>Then the fallback: a PHP script (run with the original request URI, as WordPress and Laravel expect), a static
/// file (served instead), or <c>=404</c>.</item>
/// </list>
/// Without <c>tryFiles</c>, only a directory whose index is a PHP file is taken from the static pipeline. Every lookup
/// goes through the vhost's <see cref="ConfinedFileProvider"/>: nothing outside the root's real path, no hidden names.
/// </summary>
internal static class FastCgiRouter
{
    public const string Uri = "$uri";
    public const string UriDirectory = "$uri/";
    public const string NotFoundFallback = "=404";
    public const string ScriptExtension = ".php";

    public static FastCgiRoute Route(string path, ConfinedFileProvider files, bool fastCgi, IReadOnlyList<string> tryFiles, IReadOnlyList<string> index, bool listing)
    {
        ArgumentNullException.ThrowIfNull(files);
        ArgumentNullException.ThrowIfNull(tryFiles);
        ArgumentNullException.ThrowIfNull(index);
        if (path.Length == 0)
        {
            path = "/";
        }

        if (fastCgi && TrySplitScript(path, out var script, out var pathInfo))
        {
            return IsFile(files, script) ? new FastCgiRoute(FastCgiRouteKind.Script, script, pathInfo) : FastCgiRoute.NotFound;
        }

        if (tryFiles.Count == 0)
        {
            if (fastCgi && IsDirectory(files, path) && FindIndex(files, path, index) is { } found && found.EndsWith(ScriptExtension, StringComparison.Ordinal))
            {
                return path.EndsWith('/') ? new FastCgiRoute(FastCgiRouteKind.Script, path + found) : new FastCgiRoute(FastCgiRouteKind.AddSlash);
            }

            return FastCgiRoute.Next;
        }

        for (var i = 0; i < tryFiles.Count - 1; i++)
        {
            if (tryFiles[i] == Uri && IsFile(files, path))
            {
                return FastCgiRoute.Next;
            }

            if (tryFiles[i] == UriDirectory && IsDirectory(files, path))
            {
                if (FindIndex(files, path, index) is { } found)
                {
                    if (!path.EndsWith('/'))
                    {
                        return new FastCgiRoute(FastCgiRouteKind.AddSlash);
                    }

                    return fastCgi && found.EndsWith(ScriptExtension, StringComparison.Ordinal)
                        ? new FastCgiRoute(FastCgiRouteKind.Script, path + found)
                        : FastCgiRoute.Next;
                }

                if (listing)
                {
                    return FastCgiRoute.Next;
                }
            }
        }

        var fallback = tryFiles[^1];
        if (fallback == NotFoundFallback)
        {
            return FastCgiRoute.NotFound;
        }

        if (fallback.EndsWith(ScriptExtension, StringComparison.Ordinal))
        {
            return fastCgi && IsFile(files, fallback) ? new FastCgiRoute(FastCgiRouteKind.Script, fallback) : FastCgiRoute.NotFound;
        }

        return IsFile(files, fallback) ? new FastCgiRoute(FastCgiRouteKind.Static, StaticPath: fallback) : FastCgiRoute.NotFound;
    }

    /// <summary>Checks a <c>tryFiles</c> list's shape (the master checks it too; this guards the worker's own callers).</summary>
    public static string? Check(IReadOnlyList<string>? tryFiles, bool fastCgi)
    {
        if (tryFiles is null || tryFiles.Count == 0)
        {
            return null;
        }

        for (var i = 0; i < tryFiles.Count - 1; i++)
        {
            if (tryFiles[i] is not (Uri or UriDirectory))
            {
                return $"'{tryFiles[i]}' is not $uri or $uri/";
            }
        }

        var fallback = tryFiles[^1];
        if (fallback != NotFoundFallback && (!fallback.StartsWith('/') || fallback.EndsWith('/') || !ConfinedFileProvider.IsAcceptableSubpath(fallback)
            || fallback.Contains('$', StringComparison.Ordinal) || fallback.Contains('?', StringComparison.Ordinal)))
        {
            return $"'{fallback}' is not a fallback (an absolute URL path to a file, or =404)";
        }

        return fallback.EndsWith(ScriptExtension, StringComparison.Ordinal) && !fastCgi ? $"the fallback '{fallback}' needs FastCGI" : null;
    }

    /// <summary>Splits <c>/a/b.php/c/d</c> at the first segment ending in <c>.php</c>: script <c>/a/b.php</c>, PATH_INFO <c>/c/d</c>.</summary>
    internal static bool TrySplitScript(string path, out string script, out string pathInfo)
    {
        var from = 0;
        while (true)
        {
            var at = path.IndexOf(ScriptExtension, from, StringComparison.Ordinal);
            if (at < 0)
            {
                script = pathInfo = string.Empty;
                return false;
            }

            var end = at + ScriptExtension.Length;
            if (end == path.Length || path[end] == '/')
            {
                // "/.php" alone is a hidden name, not a script.
                if (at > 0 && path[at - 1] != '/')
                {
                    script = path[..end];
                    pathInfo = path[end..];
                    return true;
                }
            }

            from = end;
        }
    }

    private static bool IsFile(ConfinedFileProvider files, string path) =>
        files.TryResolve(path, out var entry) && !entry.IsDirectory;

    private static bool IsDirectory(ConfinedFileProvider files, string path) =>
        files.TryResolve(path.Length > 1 ? path.TrimEnd('/') : path, out var entry) && entry.IsDirectory;

    private static string? FindIndex(ConfinedFileProvider files, string directory, IReadOnlyList<string> index)
    {
        var prefix = directory.EndsWith('/') ? directory : directory + "/";
        foreach (var name in index)
        {
            if (IsFile(files, prefix + name))
            {
                return name;
            }
        }

        return null;
    }
}
