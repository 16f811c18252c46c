using System.Collections;
using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.Primitives;

namespace Dispatch.Worker.Http;

/// <summary>
/// An <see cref="IFileProvider"/> over one vhost's document root that never yields anything outside it.
/// </summary>
/// <remarks>
/// <para>The sub-path (what StaticFiles passes: the request path after Kestrel's percent-decoding and dot-segment
/// removal) is refused when it contains NUL or other control characters, a backslash, a <c>.</c> or <c>..</c>
/// segment, a segment that still contains a <c>%XX</c> escape (Kestrel leaves <c>%2F</c> encoded, and double
/// encoding such as <c>%252e</c> arrives as <c>%2e</c>: anything that still looks encoded is refused rather than
/// guessed at — a file literally named with a <c>%XX</c> sequence cannot be served), or a denied name (below).</para>
/// <para>Otherwise the path is resolved with <c>realpath(3)</c> (every symlink followed to its end) and served only if
/// the result is the real path of the root or lies beneath it; the root's real path is resolved again on every
/// lookup, so a root that is a symlink switched by a deployment is followed. Fast path, same answer: a lookup first walks
/// the path as written with openat2(O_PATH, RESOLVE_NO_SYMLINKS); when that succeeds no component is a symlink, the path
/// is its own real path and the realpath walk (one readlink per component, ~27 syscalls per request for "/") is skipped;
/// a symlink anywhere, the root included, falls back to realpath. The final open is done on the resolved
/// path with openat2(RESOLVE_NO_SYMLINKS), so a symlink swapped in after the check is refused, not followed.
/// Only regular files and directories are served (no FIFOs, sockets or devices).</para>
/// <para>Hidden files: dot-files are served (<c>/.well-known/</c> must be, for ACME HTTP-01 and security.txt), except
/// names that are server or repository metadata and commonly hold secrets: <c>.ht*</c> (.htaccess, .htpasswd),
/// <c>.git</c>, <c>.svn</c>, <c>.hg</c>, <c>.bzr</c> and <c>.env</c> — anywhere in the requested or the resolved path.
/// They answer 404, as if absent, and are left out of listings.</para>
/// <para>Hidden directories (a vhost's CGI script directories when they lie inside the root): nothing whose real path
/// is one of them or beneath one is served or listed, so a script's source is never sent as a file. Their real paths
/// are resolved on every lookup, like the root's.</para>
/// <para>Everything refused looks "not found" (404), so the response does not reveal whether the target exists.</para>
/// </remarks>
internal sealed class ConfinedFileProvider : IFileProvider
{
    private static readonly string[] DeniedNames = [".git", ".svn", ".hg", ".bzr", ".env"];

    private static readonly AsyncLocal<RequestMemo?> s_requestMemo = new();

    private readonly string[] _hidden;

    /// <summary>The root is written as realpath would write it (no ".", "..", "//" nor trailing slash): a lookup that meets
    /// no symlink can take the path as written for the real one.</summary>
    private readonly bool _rootIsCanonical;

    public ConfinedFileProvider(string root, IEnumerable<string>? hiddenDirectories = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        if (!Path.IsPathFullyQualified(root))
        {
            throw new ArgumentException($"The document root '{root}' is not an absolute path.", nameof(root));
        }

        Root = root;
        _rootIsCanonical = IsCanonicalAbsolute(root);
        _hidden = hiddenDirectories?.ToArray() ?? [];
    }

    /// <summary>The root as configured (it may itself be or contain symlinks).</summary>
    public string Root { get; }

    /// <summary>
    /// A file; a directory answers "not found" here, as with PhysicalFileProvider (StaticFiles only checks
    /// <see cref="IFileInfo.Exists"/>); directories are reached through <see cref="GetDirectoryContents"/>.
    /// </summary>
    public IFileInfo GetFileInfo(string subpath)
    {
        // DefaultFiles asks for "/index.html" and StaticFiles asks again right after, in the same request: within one
        // request (see BeginRequest) the second question gets the first answer instead of a second walk.
        var memo = s_requestMemo.Value;
        if (memo is not null && ReferenceEquals(memo.Provider, this) && string.Equals(memo.Subpath, subpath, StringComparison.Ordinal))
        {
            return memo.Answer;
        }

        IFileInfo answer = TryResolve(subpath, out var entry) && !entry.IsDirectory ? entry : new NotFoundFileInfo(subpath ?? string.Empty);
        if (memo is not null)
        {
            memo.Provider = this;
            memo.Subpath = subpath;
            memo.Answer = answer;
        }

        return answer;
    }

    /// <summary>
    /// Starts a request's lookup memo (the caller's async flow, i.e. one request): a file looked up twice in it is
    /// walked once. Only the last file answer is kept, and only for the request, so nothing outlives it.
    /// </summary>
    internal static void BeginRequest() => s_requestMemo.Value = new RequestMemo();

    public IDirectoryContents GetDirectoryContents(string subpath) =>
        TryResolve(subpath, out var entry) && entry.IsDirectory
            ? new ConfinedDirectoryContents(this, subpath, entry.RealPath)
            : NotFoundDirectoryContents.Singleton;

    public IChangeToken Watch(string filter) => NullChangeToken.Singleton;

    /// <summary>True for names never served nor listed (see the class remarks).</summary>
    internal static bool IsDeniedName(ReadOnlySpan<char> name)
    {
        if (name.StartsWith(".ht", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        foreach (var denied in DeniedNames)
        {
            if (name.Equals(denied, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Checks the shape of a request sub-path (see the class remarks); does not touch the file system.</summary>
    internal static bool IsAcceptableSubpath(ReadOnlySpan<char> subpath)
    {
        foreach (var range in subpath.Split('/'))
        {
            var segment = subpath[range];
            if (segment.IsEmpty)
            {
                continue;
            }

            if (segment is "." or ".." || IsDeniedName(segment))
            {
                return false;
            }

            for (var i = 0; i < segment.Length; i++)
            {
                var c = segment[i];
                if (c < 0x20 || c == 0x7f || c == '\\')
                {
                    return false;
                }

                if (c == '%' && i + 2 < segment.Length && char.IsAsciiHexDigit(segment[i + 1]) && char.IsAsciiHexDigit(segment[i + 2]))
                {
                    return false;
                }
            }
        }

        return true;
    }

    internal bool TryResolve(string? subpath, out ConfinedFileInfo entry)
    {
        entry = null!;
        subpath ??= string.Empty;
        if (!IsAcceptableSubpath(subpath))
        {
            return false;
        }

        var relative = subpath.AsSpan().TrimStart('/');
        string real;
        NativeFileSystem.EntryType type;
        long length;
        DateTimeOffset lastModified;

        // Fast path: no symlink anywhere (root included), so the requested path is its own real path; the subpath's
        // shape was checked above and is what the slow path would check again. A symlink anywhere falls through.
        var plain = NativeFileSystem.PlainLookup.Undecided;
        type = NativeFileSystem.EntryType.Other;
        length = 0;
        lastModified = default;
        if (_rootIsCanonical)
        {
            plain = NativeFileSystem.TryStatWithoutSymlinks(relative.IsEmpty ? Root : string.Concat(Root, "/", relative), out type, out length, out lastModified);
        }

        if (plain == NativeFileSystem.PlainLookup.Missing)
        {
            return false;
        }

        if (plain == NativeFileSystem.PlainLookup.Found)
        {
            real = relative.IsEmpty ? Root : string.Concat(Root, "/", Canonical(relative));
            if (IsHidden(real))
            {
                return false;
            }
        }
        else
        {
            var rootReal = NativeFileSystem.RealPath(Root);
            if (rootReal is null)
            {
                return false;
            }

            var resolved = relative.IsEmpty ? rootReal : NativeFileSystem.RealPath(string.Concat(rootReal, "/", relative));
            if (resolved is null || !IsSameOrBeneath(rootReal, resolved, out var realRelative))
            {
                return false;
            }

            // A symlink with an innocent name may point at a denied one (or into .git/).
            if (!IsAcceptableSubpath(realRelative) || IsHidden(resolved))
            {
                return false;
            }

            if (!NativeFileSystem.TryStat(resolved, out type, out length, out lastModified))
            {
                return false;
            }

            real = resolved;
        }

        if (type == NativeFileSystem.EntryType.Other)
        {
            return false;
        }

        var trimmed = relative.TrimEnd('/');
        var name = trimmed.IsEmpty ? string.Empty : trimmed[(trimmed.LastIndexOf('/') + 1)..].ToString();
        var isDirectory = type == NativeFileSystem.EntryType.Directory;
        entry = new ConfinedFileInfo(name, real, isDirectory, isDirectory ? -1 : length, lastModified);
        return true;
    }

    /// <summary>True for an absolute path other than "/" without empty, "." or ".." segments and without a trailing slash.</summary>
    internal static bool IsCanonicalAbsolute(string path)
    {
        if (path.Length < 2 || path[0] != '/' || path[^1] == '/' || path.Contains('\0', StringComparison.Ordinal))
        {
            return false;
        }

        var rest = path.AsSpan(1);
        foreach (var range in rest.Split('/'))
        {
            var segment = rest[range];
            if (segment.IsEmpty || segment is "." or "..")
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>An accepted relative sub-path without its empty segments ("a//b/" is "a/b"), as realpath writes it.</summary>
    private static string Canonical(ReadOnlySpan<char> relative)
    {
        if (!relative.Contains("//", StringComparison.Ordinal) && !relative.EndsWith('/'))
        {
            return relative.ToString();
        }

        var builder = new System.Text.StringBuilder(relative.Length);
        foreach (var range in relative.Split('/'))
        {
            if (range.End.GetOffset(relative.Length) == range.Start.GetOffset(relative.Length))
            {
                continue;
            }

            if (builder.Length > 0)
            {
                builder.Append('/');
            }

            builder.Append(relative[range]);
        }

        return builder.ToString();
    }

    /// <summary>True when <paramref name="real"/> is <paramref name="rootReal"/> or beneath it; <paramref name="relative"/> is the rest.</summary>
    internal static bool IsSameOrBeneath(string rootReal, string real, out ReadOnlySpan<char> relative)
    {
        if (real.Length == rootReal.Length)
        {
            relative = default;
            return string.Equals(real, rootReal, StringComparison.Ordinal);
        }

        // rootReal "/" is the only real path that ends with a slash.
        var prefixLength = rootReal.EndsWith('/') ? rootReal.Length : rootReal.Length + 1;
        if (real.Length > prefixLength
            && real.StartsWith(rootReal, StringComparison.Ordinal)
            && real[prefixLength - 1] == '/')
        {
            relative = real.AsSpan(prefixLength);
            return true;
        }

        relative = default;
        return false;
    }

    private bool IsHidden(string real)
    {
        foreach (var hidden in _hidden)
        {
            var hiddenReal = NativeFileSystem.RealPath(hidden);
            if (hiddenReal is not null && IsSameOrBeneath(hiddenReal, real, out _))
            {
                return true;
            }
        }

        return false;
    }

    private sealed class RequestMemo
    {
        public ConfinedFileProvider? Provider;
        public string? Subpath;
        public IFileInfo Answer = null!;
    }

    private sealed class ConfinedDirectoryContents(ConfinedFileProvider provider, string subpath, string realDirectory)
        : IDirectoryContents
    {
        public bool Exists => true;

        public IEnumerator<IFileInfo> GetEnumerator()
        {
            // Enumerated lazily: DefaultFilesMiddleware only asks whether the directory exists.
            var prefix = subpath.EndsWith('/') ? subpath : subpath + "/";
            IEnumerable<FileSystemInfo> children;
            try
            {
                children = new DirectoryInfo(realDirectory).EnumerateFileSystemInfos();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                yield break;
            }

            using var enumerator = children.GetEnumerator();
            while (true)
            {
                try
                {
                    if (!enumerator.MoveNext())
                    {
                        yield break;
                    }
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    yield break;
                }

                // Every entry goes through the same checks as a request for it: symlinks leading outside the root
                // and denied names are not listed.
                if (provider.TryResolve(prefix + enumerator.Current.Name, out var entry))
                {
                    yield return entry;
                }
            }
        }

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
    }
}

/// <summary>A file or directory inside a vhost root, already checked by <see cref="ConfinedFileProvider"/>.</summary>
internal sealed class ConfinedFileInfo(string name, string realPath, bool isDirectory, long length, DateTimeOffset lastModified)
    : IFileInfo
{
    public bool Exists => true;

    public long Length { get; } = length;

    /// <summary>
    /// Always null: StaticFiles then reads through <see cref="CreateReadStream"/>, i.e. through the confined open
    /// (Kestrel has no real sendfile, so nothing is lost).
    /// </summary>
    public string? PhysicalPath => null;

    public string Name { get; } = name;

    public DateTimeOffset LastModified { get; } = lastModified;

    public bool IsDirectory { get; } = isDirectory;

    /// <summary>The resolved real path (no symlinks), beneath the root's real path.</summary>
    internal string RealPath { get; } = realPath;

    public Stream CreateReadStream() =>
        IsDirectory
            ? throw new InvalidOperationException("Cannot read a directory.")
            : NativeFileSystem.OpenRegularFileForRead(RealPath);
}
