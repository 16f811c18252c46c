using System.Globalization;
using System.Text;
using Dispatch.Platform.Interop;
using Dispatch.Platform.Spawn;
using Dispatch.Wire;
using Dispatch.Wire.Interop;

namespace Dispatch.Platform.Confinement;

/// <summary>
/// The built-in chroot privilege module, built as bubblewrap and systemd's RootDirectory +
/// BindReadOnlyPaths do it, because the jailed process is the .NET runtime and needs the runtime,
/// its binaries and system libraries at their usual paths. In stage 1, as root, on the main thread:
/// <list type="number">
/// <item><c>unshare(CLONE_NEWNS)</c>; <c>/</c> made recursively private, so nothing mounted here
///   propagates to the host (and nothing is left there when the process exits);</item>
/// <item>every source is opened (O_PATH) while the host's tree is still in view;</item>
/// <item>a small tmpfs mounted on <see cref="Base"/> (in this namespace only) becomes the new root:
///   directories and mount points created in it, root-owned 0755;</item>
/// <item>bound read-only (nosuid, nodev; recursively, every submount remounted read-only too):
///   /usr, /bin, /sbin, /lib, /lib64 (a merged-usr symlink is recreated as the same symlink), the
///   .NET root, our binaries' directory, /etc/ld.so.cache, /etc/localtime, /etc/alternatives,
///   /etc/ssl/certs, /sys/devices/system/{cpu,node}, /sys/fs/cgroup and the pool's paths; bound
///   writable: the pool's <c>writable</c> paths; devices /dev/null, zero, full, random, urandom
///   (nosuid, noexec); /dev/fd and /dev/std* as symlinks into /proc/self/fd;</item>
/// <item>a fresh /proc (hidepid=2: the process sees only its own uid's processes) and a private,
///   size-limited /tmp (nosuid, nodev);</item>
/// <item>the new root remounted read-only, <c>pivot_root</c> into it, the old root detached, <c>chdir("/")</c>.</item>
/// </list>
/// Paths keep their absolute names, so the exec of our own binary and every configured path resolve
/// as before. Not bound, hence absent: /etc/passwd, /etc/shadow, /home, /root, /var, other tenants'
/// roots, the config, certificates and logs. Needs CAP_SYS_ADMIN: without it (a nested container)
/// the worker fails to start with the reason.
/// </summary>
public static unsafe class Chroot
{
    /// <summary>Where the new root is built, in the private namespace only (the host's /tmp is never touched).</summary>
    public const string Base = "/tmp";

    private const string RootTmpfsOptions = "mode=0755,size=4m,nr_inodes=16384";

    /// <summary>System trees: bound read-only, or recreated as the same symlink (merged /usr).</summary>
    private static readonly string[] SystemPaths = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];

    /// <summary>The few files from /etc a runtime and a CGI shell script need; no account database, no private keys.</summary>
    private static readonly string[] EtcPaths = ["/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives", "/etc/ssl/certs"];

    /// <summary>What the runtime reads about CPUs and cgroup limits (Landlock grants the same).</summary>
    private static readonly string[] SysPaths = ["/sys/devices/system/cpu", "/sys/devices/system/node", "/sys/fs/cgroup"];

    private static readonly string[] Devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

    private enum Kind
    {
        ReadOnly,
        Writable,
        Device,
    }

    private sealed record Bind(string Path, Kind Kind, int Fd, bool IsDirectory);

    /// <summary>Builds the new root and pivots into it; returns the number of binds made. Throws with the failing call and path.</summary>
    /// <param name="uid">The pool's uid: the pool's own paths are opened with its file-system ids and groups, so a
    /// tenant's symlink can bind into its root only what the tenant could open anyway.</param>
    public static int Enter(ChrootSpec spec, uint uid, uint gid, uint[] groups)
    {
        int count;
        var binds = new List<Bind>();
        var symlinks = new List<(string Path, string Target)>();
        try
        {
            if (Libc.Unshare(Libc.CLONE_NEWNS) != 0)
            {
                var errno = Libc.LastError;
                throw new SysCallException(
                    $"unshare(CLONE_NEWNS) for the pool's chroot{(errno == Libc.EPERM ? " (needs CAP_SYS_ADMIN, which this container withholds; turn chroot off for the pool or run where it is granted)" : string.Empty)}",
                    errno);
            }

            MountOrThrow(null, "/", null, Libc.MS_REC | Libc.MS_PRIVATE, null, "make / recursively private");

            // Sources are opened in the new namespace (a bind takes only mounts of the caller's own
            // namespace) and before the tmpfs covers Base, so a source under it stays reachable.
            foreach (var p in SystemPaths.Concat(EtcPaths))
                Collect(binds, symlinks, p, Kind.ReadOnly, recreateSymlink: true);
            foreach (var p in SysPaths)
                Collect(binds, symlinks, p, Kind.ReadOnly, recreateSymlink: false);
            foreach (var p in Devices)
                Collect(binds, symlinks, p, Kind.Device, recreateSymlink: false);
            foreach (var p in RuntimePaths.CodePaths)
                Collect(binds, symlinks, p, Kind.ReadOnly, recreateSymlink: false);
            // The pool's paths (roots, CGI, certificates, extra and writable paths) are the tenant's to change:
            // opened with the pool's file-system ids and its groups (set now; the drop sets the same ones again).
            fixed (uint* list = groups)
            {
                if (Libc.SetGroups((nuint)groups.Length, list) != 0)
                    SysCallException.ThrowLast("setgroups (before opening the pool's paths)");
            }

            foreach (var p in spec.ReadOnly)
                Collect(binds, symlinks, p, Kind.ReadOnly, recreateSymlink: false, tenant: (uid, gid));
            foreach (var p in spec.Writable)
                Collect(binds, symlinks, p, Kind.Writable, recreateSymlink: false, tenant: (uid, gid));

            MountOrThrow("tmpfs", Base, "tmpfs", Libc.MS_NOSUID | Libc.MS_NODEV, RootTmpfsOptions, "mount the new root's tmpfs");
            count = BuildTree(binds, symlinks, spec);
        }
        finally
        {
            foreach (var b in binds)
                Libc.Close(b.Fd);
        }

        // The skeleton itself read-only (what is bound keeps its own flags), then swap roots.
        MountOrThrow(null, Base, null, Libc.MS_REMOUNT | Libc.MS_BIND | Libc.MS_RDONLY | Libc.MS_NOSUID | Libc.MS_NODEV, null, "remount the new root read-only");
        if (Libc.Chdir(Base) != 0)
            SysCallException.ThrowLast($"chdir({Base})");
        // pivot_root(".", "."): the old root is stacked on the new one and detached at once (pivot_root(2)).
        if (Libc.PivotRoot(".", ".") != 0)
            SysCallException.ThrowLast("pivot_root");
        if (Libc.Umount2(".", Libc.MNT_DETACH) != 0)
            SysCallException.ThrowLast("umount2(old root, MNT_DETACH)");
        if (Libc.Chdir("/") != 0)
            SysCallException.ThrowLast("chdir(/)");
        return count;
    }

    private static void Collect(List<Bind> binds, List<(string, string)> symlinks, string path, Kind kind, bool recreateSymlink, (uint Uid, uint Gid)? tenant = null)
    {
        path = Normalize(path);
        // Already in view through a system tree recreated as a symlink (/bin -> usr/bin): nothing to bind.
        if (tenant is not null && symlinks.Any(l => IsBeneath(path, l.Item1)))
            return;
        Libc.Stat st;
        if (Libc.LStat(path, &st) != 0)
        {
            var errno = Libc.LastError;
            if (errno is Libc.ENOENT or Libc.ENOTDIR)
                return; // Nothing there: nothing to bind (as Landlock skips it).
            throw new SysCallException($"lstat({path}) for the chroot", errno);
        }

        if (recreateSymlink && (st.Mode & Libc.S_IFMT) == Libc.S_IFLNK)
        {
            var target = new FileInfo(path).LinkTarget ?? throw new IOException($"{path}: unreadable symlink");
            symlinks.Add((path, target));
            return;
        }

        // Followed as Landlock's rules follow it; a pool's own path with the pool's file-system ids, so
        // that it reaches only what the tenant could (never another tenant's tree through a symlink).
        int fd;
        if (tenant is { } ids)
        {
            Libc.SetFsGid(ids.Gid);
            Libc.SetFsUid(ids.Uid);
            try
            {
                fd = Libc.Open(path, Libc.O_PATH | Libc.O_CLOEXEC, 0);
            }
            finally
            {
                Libc.SetFsUid(0);
                Libc.SetFsGid(0);
            }
        }
        else
        {
            fd = Libc.Open(path, Libc.O_PATH | Libc.O_CLOEXEC, 0);
        }

        if (fd < 0)
        {
            var errno = Libc.LastError;
            if (errno == Libc.EACCES && tenant is not null)
                throw new SysCallException($"the pool's uid {tenant.Value.Uid} cannot reach {path} (for the chroot)", errno);
            if (errno is Libc.ENOENT or Libc.ENOTDIR)
                return;
            throw new SysCallException($"open({path}, O_PATH) for the chroot", errno);
        }

        if (Libc.FStat(fd, &st) != 0)
        {
            var errno = Libc.LastError;
            Libc.Close(fd);
            throw new SysCallException($"fstat({path})", errno);
        }

        binds.Add(new Bind(path, kind, fd, (st.Mode & Libc.S_IFMT) == Libc.S_IFDIR));
    }

    private static int BuildTree(List<Bind> binds, List<(string Path, string Target)> symlinks, ChrootSpec spec)
    {
        foreach (var (path, target) in symlinks)
        {
            MakeParents(path);
            if (Libc.Symlink(target, Base + path) != 0)
                SysCallException.ThrowLast($"symlink({path} -> {target})");
        }

        // Parents before children; the same path twice: writable wins.
        var ordered = binds
            .GroupBy(b => b.Path, StringComparer.Ordinal)
            .Select(g => g.OrderBy(b => b.Kind == Kind.Writable ? 0 : 1).First())
            .OrderBy(b => b.Path.Count(c => c == '/'))
            .ThenBy(b => b.Path, StringComparer.Ordinal)
            .ToList();
        var mounted = new List<Bind>();
        foreach (var b in ordered)
        {
            var covering = mounted.Where(m => IsBeneath(b.Path, m.Path)).OrderByDescending(m => m.Path.Length).FirstOrDefault();
            if (covering is not null && covering.Kind == b.Kind)
                continue; // Already in view, with the same rights.
            var target = Base + b.Path;
            if (covering is null)
            {
                MakeMountPoint(b.Path, b.IsDirectory);
            }
            else
            {
                // Inside another bind: mount over what is there, never create anything on the host.
                Libc.Stat st;
                if (Libc.LStat(target, &st) != 0)
                    throw new SysCallException($"{b.Path} (inside the bound {covering.Path}) for the chroot", Libc.LastError);
            }

            var source = "/proc/self/fd/" + b.Fd.ToString(CultureInfo.InvariantCulture);
            // The target is resolved without following any symlink (a tenant's tree may hold the mount point:
            // a symlink there must not move a root mount elsewhere) and mounted through its descriptor.
            var targetFd = OpenTarget(target, b.Path);
            try
            {
                MountOrThrow(source, "/proc/self/fd/" + targetFd.ToString(CultureInfo.InvariantCulture), null, Libc.MS_BIND | (b.Kind == Kind.Device ? 0 : Libc.MS_REC), null, $"bind {b.Path}");
            }
            finally
            {
                Libc.Close(targetFd);
            }

            targetFd = OpenTarget(target, b.Path);
            try
            {
                MountOrThrow(null, "/proc/self/fd/" + targetFd.ToString(CultureInfo.InvariantCulture), null, RemountFlags(b.Kind, noexec: b.Kind == Kind.Writable), null, $"remount {b.Path} {(b.Kind == Kind.ReadOnly ? "read-only" : "nosuid")}");
            }
            finally
            {
                Libc.Close(targetFd);
            }

            mounted.Add(b);
        }

        RemountSubmounts(mounted);

        foreach (var (name, target) in new[] { ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2") })
        {
            MakeParents("/dev/" + name);
            if (Libc.Symlink(target, Base + "/dev/" + name) != 0)
                SysCallException.ThrowLast($"symlink(/dev/{name})");
        }

        MakeMountPoint("/proc", isDirectory: true);
        if (Libc.Mount("proc", Base + "/proc", "proc", Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC, "hidepid=2") != 0)
        {
            // A container whose /proc is partly covered may refuse a fresh proc: the host's, bound.
            var errno = Libc.LastError;
            Console.Error.WriteLine($"WRN chroot: mounting a fresh /proc failed ({Libc.Describe(errno)}); binding the existing /proc instead");
            MountOrThrow("/proc", Base + "/proc", null, Libc.MS_BIND | Libc.MS_REC, null, "bind /proc");
        }

        MakeMountPoint("/tmp", isDirectory: true);
        MountOrThrow("tmpfs", Base + "/tmp", "tmpfs", Libc.MS_NOSUID | Libc.MS_NODEV | Libc.MS_NOEXEC, $"mode=1777,size={spec.TmpBytes.ToString(CultureInfo.InvariantCulture)}", "mount the private /tmp");
        return mounted.Count;
    }

    private static int OpenTarget(string target, string what)
    {
        var fd = Libc.OpenAt2(target, (ulong)(Libc.O_PATH | Libc.O_CLOEXEC), Libc.RESOLVE_NO_SYMLINKS | Libc.RESOLVE_NO_MAGICLINKS);
        if (fd < 0)
        {
            var errno = Libc.LastError;
            throw new SysCallException(errno == Libc.ELOOP ? $"the mount point of {what} in the new root goes through a symlink; refused" : $"open the mount point of {what} in the new root", errno);
        }

        return fd;
    }

    private static ulong RemountFlags(Kind kind, bool noexec) =>
        Libc.MS_REMOUNT | Libc.MS_BIND | Libc.MS_NOSUID
        | (kind == Kind.ReadOnly ? Libc.MS_RDONLY : 0)
        | (kind == Kind.Device ? Libc.MS_NOEXEC : Libc.MS_NODEV)
        | (noexec ? Libc.MS_NOEXEC : 0);

    /// <summary>
    /// A recursive bind carries the source's submounts with their own flags: remount each under a
    /// read-only bind read-only (nosuid, nodev) as well, keeping noexec where it was.
    /// </summary>
    private static void RemountSubmounts(List<Bind> mounted)
    {
        var direct = mounted.Select(m => Base + m.Path).ToHashSet(StringComparer.Ordinal);
        foreach (var line in File.ReadAllLines("/proc/self/mountinfo"))
        {
            var fields = line.Split(' ');
            if (fields.Length < 6)
                continue;
            var mountPoint = Unescape(fields[4]);
            if (direct.Contains(mountPoint) || !IsBeneath(mountPoint, Base) || mountPoint == Base)
                continue;
            var inner = mountPoint[Base.Length..];
            var owner = mounted.Where(m => IsBeneath(inner, m.Path)).OrderByDescending(m => m.Path.Length).FirstOrDefault();
            if (owner is null)
                continue;
            var options = fields[5].Split(',');
            // Only ever add restrictions: a submount read-only on the host stays read-only under a writable bind.
            var flags = RemountFlags(owner.Kind, options.Contains("noexec") || owner.Kind == Kind.Writable) | (options.Contains("ro") ? Libc.MS_RDONLY : 0);
            MountOrThrow(null, mountPoint, null, flags, null, $"remount the submount {inner}");
        }
    }

    /// <summary>mountinfo escapes space, tab, newline and backslash as \ooo.</summary>
    private static string Unescape(string field)
    {
        if (!field.Contains('\\', StringComparison.Ordinal))
            return field;
        var sb = new StringBuilder();
        for (var i = 0; i < field.Length; i++)
        {
            if (field[i] == '\\' && i + 3 < field.Length)
            {
                sb.Append((char)Convert.ToInt32(field.Substring(i + 1, 3), 8));
                i += 3;
            }
            else
            {
                sb.Append(field[i]);
            }
        }

        return sb.ToString();
    }

    /// <summary>Creates the directories above <paramref name="path"/> inside the new root (root-owned, 0755), refusing symlinks on the way.</summary>
    private static void MakeParents(string path)
    {
        var current = Base;
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        for (var i = 0; i < parts.Length - 1; i++)
        {
            current += "/" + parts[i];
            MakeDirectory(current);
        }
    }

    private static void MakeDirectory(string path)
    {
        Libc.Stat st;
        if (Libc.LStat(path, &st) == 0)
        {
            if ((st.Mode & Libc.S_IFMT) != Libc.S_IFDIR)
                throw new IOException($"{path[Base.Length..]} in the new root is not a directory (a symlink the chroot made?); bind its target instead");
            return;
        }

        if (Libc.Mkdir(path, 0x1ED /* 0755 */) != 0)
            SysCallException.ThrowLast($"mkdir({path[Base.Length..]}) in the new root");
        if (Libc.Chmod(path, 0x1ED) != 0)
            SysCallException.ThrowLast($"chmod({path[Base.Length..]}) in the new root");
    }

    private static void MakeMountPoint(string path, bool isDirectory)
    {
        MakeParents(path);
        var full = Base + path;
        if (isDirectory)
        {
            MakeDirectory(full);
            return;
        }

        Libc.Stat st;
        if (Libc.LStat(full, &st) == 0)
            return;
        var fd = Libc.Open(full, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_CLOEXEC | Libc.O_NOFOLLOW, 0x1A4 /* 0644 */);
        if (fd < 0)
            SysCallException.ThrowLast($"create the mount point {path} in the new root");
        Libc.Close(fd);
    }

    private static void MountOrThrow(string? source, string target, string? fsType, ulong flags, string? data, string what)
    {
        if (Libc.Mount(source, target, fsType, flags, data) != 0)
            throw new SysCallException($"mount: {what} (at {target})", Libc.LastError);
    }

    private static string Normalize(string path)
    {
        var full = Path.GetFullPath(path);
        return full.Length > 1 ? full.TrimEnd('/') : full;
    }

    /// <summary>True when <paramref name="path"/> is <paramref name="ancestor"/> or below it.</summary>
    private static bool IsBeneath(string path, string ancestor) =>
        path == ancestor || ancestor == "/" || path.StartsWith(ancestor + "/", StringComparison.Ordinal);
}
