using System.Collections;
using System.Collections.Concurrent;
using Dispatch.Platform.Interop;
using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.Primitives;
using Microsoft.Win32.SafeHandles;

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
/// <para>Open-file cache (as nginx's <c>open_file_cache</c> with <c>open_file_cache_valid</c>): a positive answer (the
/// walk, its metadata and, once the file is first read, its open descriptor) is reused for
/// <see cref="FileCacheOptions.Validity"/> (1 s) after the walk that produced it; after that the next lookup walks again
/// from scratch, exactly as without the cache. So a file deleted, replaced, chmod-ed or turned into a symlink, a root
/// symlink switched, is seen at most one validity period late, and meanwhile the old answer is served from the
/// descriptor opened when the old path was checked: the cache never follows a path it did not check. Refusals and
/// misses are never cached (a new file is seen at once). Bounded: at most <see cref="FileCacheOptions.Capacity"/>
/// answers per vhost (beyond that answers are simply not cached) and at most <see cref="SharedDescriptorBudget"/>
/// cached descriptors per process (an eighth of RLIMIT_NOFILE, at most 1024; beyond that each read opens its own).
/// Expired answers are dropped by a timer that runs while the cache is not empty, and their descriptors closed once the
/// last response reading them is done.</para>
/// </remarks>
internal sealed class ConfinedFileProvider : IFileProvider, IDisposable
{
    private static readonly string[] DeniedNames = [".git", ".svn", ".hg", ".bzr", ".env"];

    private static readonly AsyncLocal<RequestMemo?> s_requestMemo = new();

    private readonly string[] _hidden;

    private readonly ConcurrentDictionary<string, CachedAnswer>? _cache;
    private readonly long _validityMs;
    private readonly int _capacity;
    private readonly Func<long> _clock;
    private int _cached;
    private Timer? _sweeper;
    private int _sweeperArmed;
    private volatile bool _disposed;
    private readonly Lock _sweeperGate = new();

    /// <summary>The root is written as realpath would write it (no ".", "..", "//" nor trailing slash): a lookup that meets
    /// no symlink can take the path as written for the real one.</summary>
    private readonly bool _rootIsCanonical;

    public ConfinedFileProvider(string root, IEnumerable<string>? hiddenDirectories = null)
        : this(root, hiddenDirectories, FileCacheOptions.Default)
    {
    }

    internal ConfinedFileProvider(string root, IEnumerable<string>? hiddenDirectories, FileCacheOptions cache)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        if (!Path.IsPathFullyQualified(root))
        {
            throw new ArgumentException($"The document root '{root}' is not an absolute path.", nameof(root));
        }

        Root = root;
        _rootIsCanonical = IsCanonicalAbsolute(root);
        _hidden = hiddenDirectories?.ToArray() ?? [];
        _validityMs = (long)cache.Validity.TotalMilliseconds;
        _capacity = cache.Capacity;
        _clock = cache.ClockMilliseconds ?? (static () => Environment.TickCount64);
        if (_validityMs > 0 && _capacity > 0)
        {
            _cache = new ConcurrentDictionary<string, CachedAnswer>(StringComparer.Ordinal);
        }
    }

    /// <summary>Cached descriptors the whole process may hold (an eighth of RLIMIT_NOFILE, at most 1024).</summary>
    internal static int SharedDescriptorBudget { get; } = ComputeDescriptorBudget();

    /// <summary>Answers cached now (tests).</summary>
    internal int CachedAnswers => Volatile.Read(ref _cached);

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

    /// <summary>
    /// A directory's listing, or "not found". DefaultFiles asks this of every GET with a slash added ("/style.css/"),
    /// to redirect a directory named without one; when the open-file cache holds a valid answer that the path without
    /// that slash is a file, that answer says "not found" without a walk (the walk would only fail, ENOTDIR: one system
    /// call per request for every static file but an index). As stale as the cached answer, at most one validity period.
    /// </summary>
    public IDirectoryContents GetDirectoryContents(string subpath)
    {
        if (IsCachedFile(subpath))
        {
            return NotFoundDirectoryContents.Singleton;
        }

        return TryResolve(subpath, out var entry) && entry.IsDirectory
            ? new ConfinedDirectoryContents(this, subpath, entry.RealPath)
            : NotFoundDirectoryContents.Singleton;
    }

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

    /// <summary>Stops the sweeper and lets go of every cached answer (the server lives as long as the process; tests).</summary>
    public void Dispose()
    {
        _disposed = true;
        lock (_sweeperGate)
        {
            _sweeper?.Dispose();
        }

        if (_cache is not null)
        {
            foreach (var pair in _cache)
            {
                Drop(pair);
            }
        }
    }

    /// <summary>Drops every expired answer and lets go of its descriptor (the timer calls this; tests too).</summary>
    internal void Sweep()
    {
        if (_cache is null)
        {
            return;
        }

        var now = _clock();
        foreach (var pair in _cache)
        {
            if (now - pair.Value.ValidatedAt >= _validityMs)
            {
                Drop(pair);
            }
        }
    }

    /// <summary>Resolves <paramref name="subpath"/> through the open-file cache (see the class remarks).</summary>
    internal bool TryResolve(string? subpath, out ConfinedFileInfo entry)
    {
        subpath ??= string.Empty;
        var cache = _cache;
        if (cache is null || _disposed)
        {
            return TryResolveUncached(subpath, shareable: false, out entry);
        }

        var now = _clock();
        if (cache.TryGetValue(subpath, out var cached))
        {
            if (now - cached.ValidatedAt < _validityMs && !cached.Entry.IsEvicted)
            {
                entry = cached.Entry;
                return true;
            }

            Drop(new KeyValuePair<string, CachedAnswer>(subpath, cached));
        }

        if (!TryResolveUncached(subpath, shareable: true, out entry))
        {
            return false;
        }

        if (Interlocked.Increment(ref _cached) <= _capacity && cache.TryAdd(subpath, new CachedAnswer(entry, now)))
        {
            ArmSweeper();
        }
        else
        {
            Interlocked.Decrement(ref _cached);
            entry.Evict(); // not cached: it opens its own descriptor per read
        }

        return true;
    }

    // Whether subpath is "<p>/" and the cache holds a valid answer that <p> is a file (no walk, no system call).
    private bool IsCachedFile(string? subpath)
    {
        var cache = _cache;
        if (cache is null || _disposed || subpath is not { Length: > 1 } || subpath[^1] != '/' || subpath[^2] == '/')
        {
            return false;
        }

        var lookup = cache.GetAlternateLookup<ReadOnlySpan<char>>();
        return lookup.TryGetValue(subpath.AsSpan(0, subpath.Length - 1), out var cached)
            && !cached.Entry.IsDirectory
            && _clock() - cached.ValidatedAt < _validityMs
            && !cached.Entry.IsEvicted;
    }

    private void Drop(KeyValuePair<string, CachedAnswer> pair)
    {
        if (_cache!.TryRemove(pair))
        {
            Interlocked.Decrement(ref _cached);
            pair.Value.Entry.Evict();
        }
    }

    private void ArmSweeper()
    {
        if (Interlocked.CompareExchange(ref _sweeperArmed, 1, 0) != 0)
        {
            return;
        }

        lock (_sweeperGate)
        {
            if (_disposed)
            {
                return;
            }

            // No ExecutionContext flows into the timer (it would keep the request's AsyncLocals alive).
            if (_sweeper is null)
            {
                using (ExecutionContext.SuppressFlow())
                {
                    _sweeper = new Timer(static state => ((ConfinedFileProvider)state!).OnSweep(), this, Timeout.Infinite, Timeout.Infinite);
                }
            }

            _sweeper.Change(_validityMs, Timeout.Infinite);
        }
    }

    private void OnSweep()
    {
        Sweep();
        Volatile.Write(ref _sweeperArmed, 0);
        if (Volatile.Read(ref _cached) > 0)
        {
            ArmSweeper();
        }
    }

    private static unsafe int ComputeDescriptorBudget()
    {
        Libc.RLimit limit;
        if (Libc.GetRLimit(Libc.RLIMIT_NOFILE, &limit) != 0)
        {
            return 128;
        }

        return (int)Math.Min(1024UL, limit.Cur / 8);
    }

    private bool TryResolveUncached(string subpath, bool shareable, out ConfinedFileInfo entry)
    {
        entry = null!;
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
        FileIdentity identity = default;
        if (_rootIsCanonical)
        {
            plain = NativeFileSystem.TryStatWithoutSymlinks(relative.IsEmpty ? Root : string.Concat(Root, "/", relative), out type, out length, out lastModified, out identity);
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

            if (!NativeFileSystem.TryStat(resolved, out type, out length, out lastModified, out identity))
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
        entry = new ConfinedFileInfo(name, real, isDirectory, isDirectory ? -1 : length, lastModified, shareable && !isDirectory, identity);
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

    private sealed class CachedAnswer(ConfinedFileInfo entry, long validatedAt)
    {
        public ConfinedFileInfo Entry { get; } = entry;

        /// <summary>When the walk that produced <see cref="Entry"/> was done (milliseconds of the cache's clock).</summary>
        public long ValidatedAt { get; } = validatedAt;
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
                if (provider.TryResolveUncached(prefix + enumerator.Current.Name, shareable: false, out var entry))
                {
                    yield return entry;
                }
            }
        }

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
    }
}

/// <summary>How <see cref="ConfinedFileProvider"/> caches its answers (see its remarks).</summary>
/// <param name="Validity">How long an answer is reused after the walk that produced it; zero turns the cache off.</param>
/// <param name="Capacity">At most this many answers per provider.</param>
/// <param name="ClockMilliseconds">The clock (tests); <see cref="Environment.TickCount64"/> by default.</param>
internal readonly record struct FileCacheOptions(TimeSpan Validity, int Capacity, Func<long>? ClockMilliseconds = null)
{
    public static FileCacheOptions Default => new(TimeSpan.FromSeconds(1), 256);

    public static FileCacheOptions Off => new(TimeSpan.Zero, 0);
}

/// <summary>A file or directory inside a vhost root, already checked by <see cref="ConfinedFileProvider"/>.</summary>
/// <remarks>
/// A shareable answer (one held by the open-file cache) opens its file once, at the first read, and every read after
/// that shares the descriptor (each stream holds a reference on it); <see cref="Evict"/> (the cache let the answer go)
/// releases the cache's reference, so the descriptor is closed as soon as no response is reading it, and reads after
/// that open their own descriptor as an uncached answer does.
/// </remarks>
internal sealed class ConfinedFileInfo(
    string name, string realPath, bool isDirectory, long length, DateTimeOffset lastModified, bool shareable = false, FileIdentity identity = default)
    : IFileInfo
{
    private static int s_sharedDescriptors;

    private readonly Lock? _gate = shareable ? new() : null;
    private SafeFileHandle? _shared;
    private long _sharedLength;
    private bool _evicted = !shareable;
    private string? _sendToken;

    public bool Exists => true;

    public long Length { get; } = length;

    /// <summary>
    /// Not a path: for a file, a token that starts with NUL (no open can succeed on it) and names the real path, so that
    /// StaticFiles hands the file to the response body feature's SendFileAsync, where <see cref="StaticFileBody"/>
    /// recognizes it and reads through <see cref="CreateReadStream"/> (the confined open) without StaticFiles' 64 KiB
    /// copy buffer. Null for a directory.
    /// </summary>
    public string? PhysicalPath => IsDirectory ? null : _sendToken ??= "\0confined:" + RealPath;

    public string Name { get; } = name;

    public DateTimeOffset LastModified { get; } = lastModified;

    public bool IsDirectory { get; } = isDirectory;

    /// <summary>The resolved real path (no symlinks), beneath the root's real path.</summary>
    internal string RealPath { get; } = realPath;

    /// <summary>The cache let this answer go, or it found the file changed since the walk.</summary>
    internal bool IsEvicted => _gate is not null && Volatile.Read(ref _evicted);

    /// <summary>The cached descriptor, if one is open now (tests).</summary>
    internal int? SharedDescriptor
    {
        get
        {
            if (_gate is null)
            {
                return null;
            }

            lock (_gate)
            {
                return _shared is null ? null : (int)_shared.DangerousGetHandle();
            }
        }
    }

    public Stream CreateReadStream()
    {
        if (IsDirectory)
        {
            throw new InvalidOperationException("Cannot read a directory.");
        }

        if (_gate is not null && !Volatile.Read(ref _evicted))
        {
            lock (_gate)
            {
                if (!_evicted && (_shared is not null || TryTakeDescriptorSlot()))
                {
                    if (_shared is null)
                    {
                        SafeFileHandle opened;
                        long openedLength;
                        FileIdentity openedIdentity;
                        try
                        {
                            opened = NativeFileSystem.OpenRegularFile(RealPath, out openedLength, out openedIdentity);
                        }
                        catch
                        {
                            Interlocked.Decrement(ref s_sharedDescriptors);
                            throw;
                        }

                        if (openedIdentity != identity)
                        {
                            // Not the file the walk described (replaced or rewritten since): this read gets what is
                            // there now, as without the cache, and the answer is not shared; the provider drops it
                            // at the next lookup, which walks again.
                            Interlocked.Decrement(ref s_sharedDescriptors);
                            _evicted = true;
                            return new FileReadStream(opened, openedLength);
                        }

                        _shared = opened;
                        _sharedLength = openedLength;
                    }

                    var added = false;
                    _shared.DangerousAddRef(ref added);
                    return new FileReadStream(_shared, _sharedLength, shared: true);
                }
            }
        }

        return NativeFileSystem.OpenRegularFileForRead(RealPath);
    }

    /// <summary>The cache let this answer go: no more sharing; the descriptor closes when its last reader is done.</summary>
    internal void Evict()
    {
        if (_gate is null)
        {
            return;
        }

        SafeFileHandle? handle;
        lock (_gate)
        {
            _evicted = true;
            handle = _shared;
            _shared = null;
        }

        if (handle is not null)
        {
            Interlocked.Decrement(ref s_sharedDescriptors);
            handle.Dispose();
        }
    }

    private static bool TryTakeDescriptorSlot()
    {
        if (Interlocked.Increment(ref s_sharedDescriptors) <= ConfinedFileProvider.SharedDescriptorBudget)
        {
            return true;
        }

        Interlocked.Decrement(ref s_sharedDescriptors);
        return false;
    }
}
