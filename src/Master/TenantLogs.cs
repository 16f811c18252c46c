using Dispatch.Protocol.Interop;

namespace Dispatch.Master;

/// <summary>
/// Per-vhost access logs, opened by the master (root) and handed to the vhost's worker, which can
/// write to its own descriptors and open no log at all. Root never follows a path a tenant can
/// influence: the log's directory, and every directory above it, must be root-owned and writable by
/// no one else; the file is opened with O_NOFOLLOW, must be a regular root-owned file, and is made
/// readable by the pool's group (0640 root:pool).
/// </summary>
internal static unsafe class TenantLogs
{
    /// <summary>Null when <paramref name="path"/> is an acceptable log path, else why not.</summary>
    public static string? Check(string path)
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
        }

        return null;
    }

    /// <summary>Opens (creating) <paramref name="path"/> for appending; the caller owns the descriptor.</summary>
    public static int Open(string path, uint gid)
    {
        var why = Check(path);
        if (why is not null)
            throw new IOException(why);
        var fd = Libc.Open(path, Libc.O_WRONLY | Libc.O_APPEND | Libc.O_CREAT | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0x1A0 /* 0640 */);
        if (fd < 0)
            throw new IOException($"{path}: {Libc.Describe(Libc.LastError)}");
        Libc.Stat st;
        if (Libc.FStat(fd, &st) != 0 || (st.Mode & Libc.S_IFMT) != Libc.S_IFREG || st.Uid != 0)
        {
            Libc.Close(fd);
            throw new IOException($"{path}: not a root-owned regular file");
        }

        Libc.FChown(fd, 0, gid);
        Libc.FChmod(fd, 0x1A0);
        return fd;
    }
}
