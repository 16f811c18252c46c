using Dispatch.Platform.Interop;

namespace Dispatch.Master.Files;

/// <summary>
/// Per-vhost access logs, opened by the master (root) and handed to the vhost's worker, which can
/// write to its own descriptors and open no log at all. Root never follows a path a tenant can
/// influence: the log's directory, and every directory above it, must be root-owned and writable by
/// no one else; the file is opened with O_NOFOLLOW, must be a regular root-owned file with a single
/// link whose group is root's or the pool's, and is made readable by the pool's group (0640 root:pool).
/// The config loader also refuses the config file, certificate files and the master's own log
/// (<see cref="CheckNotReserved"/>): opening would hand them to a tenant and chown them.
/// </summary>
internal static unsafe class TenantLogs
{
    /// <summary>Null when <paramref name="path"/> is an acceptable log path for a pool of group <paramref name="gid"/> (null: not known yet), else why not.</summary>
    public static string? Check(string path, uint? gid = null)
    {
        if (!Path.IsPathRooted(path))
            return $"'{path}' is not an absolute path";
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is null || !Directory.Exists(dir))
            return $"directory '{dir}' does not exist";
        var unsafeDir = PathSafety.CheckRootOwned(dir);
        if (unsafeDir is not null)
            return $"logs must live under a directory only root can write: {unsafeDir}";
        Libc.Stat st;
        if (Libc.LStat(path, &st) == 0)
        {
            if ((st.Mode & Libc.S_IFMT) == Libc.S_IFLNK)
                return $"{path} is a symbolic link";
            if ((st.Mode & Libc.S_IFMT) != Libc.S_IFREG)
                return $"{path} is not a regular file";
            if (st.Uid != 0)
                return $"{path} is owned by uid {st.Uid}, not root";
            if (ExistingProblem(path, st, gid) is { } why)
                return why;
        }

        return null;
    }

    /// <summary>An existing log file: one link only (another name could be any root file), group root's or the pool's.</summary>
    private static string? ExistingProblem(string path, in Libc.Stat st, uint? gid)
    {
        if (st.NLink > 1)
            return $"{path} has {st.NLink} hard links: a log file must have only its own name";
        if (st.Gid != 0 && gid is { } g && st.Gid != g)
            return $"{path} belongs to group {st.Gid}, neither root's nor the pool's ({g}): it is not this pool's log";
        return null;
    }

    /// <summary>
    /// Null when <paramref name="path"/> is none of <paramref name="reserved"/> (the config file, certificate files,
    /// the master's log), by name and, for existing files, by device and inode; else why not.
    /// </summary>
    public static string? CheckNotReserved(string path, IEnumerable<(string Path, string What)> reserved)
    {
        var full = Path.GetFullPath(path);
        var identity = Identity(full);
        foreach (var (other, what) in reserved)
        {
            var otherFull = Path.GetFullPath(other);
            if (string.Equals(full, otherFull, StringComparison.Ordinal) || (identity is not null && identity == Identity(PathSafety.RealPath(otherFull))))
                return $"{path} is {what} ({other})";
        }

        return null;
    }

    /// <summary>(st_dev, st_ino) of an existing file, not following a final symlink; null when it does not exist.</summary>
    public static (ulong Dev, ulong Ino)? Identity(string path)
    {
        Libc.Stat st;
        return Libc.LStat(path, &st) == 0 ? (st.Dev, st.Ino) : null;
    }

    /// <summary>Opens (creating) <paramref name="path"/> for appending; the caller owns the descriptor.</summary>
    public static int Open(string path, uint gid)
    {
        var why = Check(path, gid);
        if (why is not null)
            throw new IOException(why);
        // Only root can create a name in the (root-owned) directory: a file absent now is the one O_CREAT makes.
        var existed = Identity(path) is not null;
        var fd = Libc.Open(path, Libc.O_WRONLY | Libc.O_APPEND | Libc.O_CREAT | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0x1A0 /* 0640 */);
        if (fd < 0)
            throw new IOException($"{path}: {Libc.Describe(Libc.LastError)}");
        Libc.Stat st;
        if (Libc.FStat(fd, &st) != 0 || (st.Mode & Libc.S_IFMT) != Libc.S_IFREG || st.Uid != 0)
        {
            Libc.Close(fd);
            throw new IOException($"{path}: not a root-owned regular file");
        }

        // Checked again on the descriptor about to be chowned (a new file's group may be the directory's: we set it).
        if ((existed ? ExistingProblem(path, st, gid) : st.NLink > 1 ? $"{path} has {st.NLink} hard links" : null) is { } problem)
        {
            Libc.Close(fd);
            throw new IOException(problem);
        }

        Libc.FChown(fd, 0, gid);
        Libc.FChmod(fd, 0x1A0);
        return fd;
    }
}
