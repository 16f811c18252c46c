using Dispatch.Master.Files;
using Dispatch.Platform.Confinement;
using Dispatch.Platform.Interop;
using Dispatch.Platform.Spawn;

namespace Dispatch.Master.Config;

/// <summary>
/// A pool's configurable Landlock rules beyond the runtime and its roots: <c>landlock.write</c> directories and
/// <c>landlock.connectTcp</c> ports, checked at config load.
/// </summary>
/// <remarks>
/// <para>A write path must be an absolute path to an existing directory owned by the pool's uid and not writable by
/// others (a world-writable place such as /tmp would be shared with every other tenant), neither inside nor containing
/// a system directory (/etc, /usr, /proc, /sys, …), the config file's directory, Dispatch's binaries or the .NET
/// runtime, nor inside or containing another pool's roots, CGI directories, certificate directory or write paths, nor
/// the pool's own CGI directories or <c>landlock.exec</c> paths (write then execute). The same checks apply to a chroot's
/// <c>writable</c> paths (which may also be single files). It
/// must exist because Landlock builds a rule from an open descriptor: a path created later would silently grant
/// nothing. The jail checks the directory again, on the descriptor the rule is built from, after the uid drop.</para>
/// <para>Write means: read, list, create, write, truncate, rename and remove files, directories, symlinks, FIFOs and
/// sockets beneath it — never execute (unless also listed in <c>landlock.exec</c>) and never device nodes.</para>
/// <para>Connect ports: Landlock matches TCP ports, not addresses, so a port listed here may be reached on any address
/// the network lets the worker reach. The ports of the pool's TCP proxy upstreams (<c>http://127.x.y.z:PORT</c>, <c>http://[::1]:PORT</c>,
/// parsed by <see cref="Dispatch.Wire.Payloads.ProxyUpstream"/>) are added by themselves.</para>
/// </remarks>
internal static class LandlockRules
{
    /// <summary>What the jail spec carries at most (JailSpec's limit).</summary>
    public const int MaxConnectPorts = 64;

    private static readonly string[] SystemDirectories =
    [
        "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev", "/proc", "/sys", "/run", "/root", "/var/log", "/var/run",
    ];

    /// <summary>The TCP ports the pool's workers may connect to: its proxy upstreams' and its <c>connectTcp</c> list.</summary>
    public static List<ushort> ConnectPorts(PoolConfig pool, IEnumerable<VhostConfig> vhostsOfPool) =>
    [
        .. vhostsOfPool.SelectMany(v => v.Proxy).Where(p => !p.Upstream.IsUnixSocket)
            .Select(p => (ushort)p.Upstream.Port)
            .Concat(pool.ConnectTcp)
            .Distinct()
            .Order(),
    ];

    /// <summary>Null when <paramref name="path"/> is an acceptable write path for <paramref name="pool"/>, else why not.</summary>
    /// <param name="allowFile">A chroot <c>writable</c> entry may also be a single regular file (bound at its place).</param>
    public static unsafe string? CheckWritePath(string path, PoolConfig pool, IEnumerable<VhostConfig> vhosts, string configFile, bool allowFile = false)
    {
        if (path.Split('/').Any(segment => segment is "." or ".."))
            return $"'{path}' contains '.' or '..' segments";
        if (!Directory.Exists(path) && !(allowFile && File.Exists(path)))
            return $"directory '{path}' does not exist (Landlock needs it at the worker's start; a later one would grant nothing)";
        var real = PathSafety.RealPath(path);

        var configDirectory = Path.GetDirectoryName(configFile) ?? "/";
        var protectedPaths = SystemDirectories.Select(d => (d, "a system directory"))
            .Append((configDirectory, "the config file's directory"))
            .Append((RuntimePaths.AppDirectory, "Dispatch's binaries"))
            .Concat(RuntimePaths.DotnetRoot is { } dotnetRoot ? [(dotnetRoot, "the .NET runtime")] : Array.Empty<(string, string)>());
        foreach (var (other, what) in protectedPaths)
        {
            if (Overlap(path, real, other) is { } how)
                return $"{path} {how} {other} ({what})";
        }

        foreach (var v in vhosts.Where(v => !v.ServedBy(pool.Name)))
        {
            var theirs = new[] { (v.Root, "root") }
                .Concat(v.Cgi.Select(c => (c.Directory, "CGI directory")))
                .Concat(v.PassthroughCertDir is { } cert ? [(cert, "certificate directory")] : []);
            foreach (var (other, what) in theirs)
            {
                if (other.Length > 0 && Overlap(path, real, other) is { } how)
                    return $"{path} {how} {other}, the {what} of vhost {v.Name} (pool {v.Pool})";
            }
        }

        // The pool's own CGI directories and exec paths: a script could write a file there and then run it. Its own
        // document roots may overlap (the site is then writable by its scripts: the operator's choice).
        var mine = vhosts.Where(v => v.ServedBy(pool.Name)).SelectMany(v => v.Cgi.Select(c => (c.Directory, $"a CGI directory of vhost {v.Name}")))
            .Concat((pool.LandlockExec ?? []).Select(e => (e, "a landlock.exec path of this pool")));
        foreach (var (other, what) in mine)
        {
            if (other.Length > 0 && Overlap(path, real, other) is { } how)
                return $"{path} {how} {other}, {what}: a file written there could then be executed";
        }

        Libc.Stat st;
        if (Libc.LStat(real, &st) != 0)
            return $"{real}: {Libc.Describe(Libc.LastError)}";
        if (st.Uid != pool.Uid)
            return $"{path} is owned by uid {st.Uid}, not the pool's uid {pool.Uid}: a write path is a directory the tenant owns";
        if ((st.Mode & 0x2) != 0)
            return $"{path} is writable by everyone (mode {Convert.ToString(st.Mode & 0xFFF, 8)}): it would be shared with every other tenant";
        return null;
    }

    /// <summary>Null when <paramref name="path"/> (acceptable on its own) overlaps none of the other pools' write paths, else why.</summary>
    public static string? CheckOtherPools(string path, IEnumerable<(string Pool, string Path)> others)
    {
        var real = PathSafety.RealPath(path);
        foreach (var (pool, other) in others)
        {
            if (Overlap(path, real, other) is { } how)
                return $"{path} {how} {other}, a write path of pool {pool}";
        }

        return null;
    }

    /// <summary>"is inside", "contains" or "is" when the write path (as configured or resolved) and <paramref name="other"/> overlap.</summary>
    private static string? Overlap(string path, string real, string other)
    {
        var otherReal = Directory.Exists(other) ? PathSafety.RealPath(other) : other;
        foreach (var mine in new[] { path, real }.Distinct())
        {
            foreach (var theirs in new[] { other, otherReal }.Distinct())
            {
                if (Same(mine, theirs))
                    return "is";
                if (Beneath(mine, theirs))
                    return "is inside";
                if (Beneath(theirs, mine))
                    return "contains";
            }
        }

        return null;
    }

    private static bool Same(string a, string b) => string.Equals(a.TrimEnd('/'), b.TrimEnd('/'), StringComparison.Ordinal);

    private static bool Beneath(string inner, string outer)
    {
        var prefix = outer.TrimEnd('/') + "/";
        return inner.StartsWith(prefix, StringComparison.Ordinal);
    }
}
