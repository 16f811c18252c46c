using Dispatch.Master.Config;
using Dispatch.Platform.Interop;
using Dispatch.Wire.Interop;

namespace Dispatch.Master.Files;

/// <summary>
/// The directory of a pool's spawned php-fpm sockets and configs: <c>&lt;control socket's directory&gt;/php-fpm/&lt;pool&gt;</c>,
/// the parent root-owned (0755), the pool's own owned by the pool's uid and gid, mode 0700 — only the tenant (and root)
/// can reach the sockets. Root creates and fixes it; it never opens anything inside.
/// </summary>
internal static unsafe class FastCgiDirectories
{
    public static string For(DispatchConfig config, string pool) =>
        Path.Combine(Path.GetDirectoryName(config.Operations.ControlSocket) ?? "/run/dispatch", "php-fpm", pool);

    /// <summary>Whether a vhost of the pool has php-fpm spawned by its workers.</summary>
    public static bool Needed(IEnumerable<VhostConfig> vhostsOfPool) => vhostsOfPool.Any(v => v.FastCgi?.Spawn is not null);

    /// <summary>Creates (or repairs) the pool's directory; throws <see cref="SysCallException"/> when it cannot.</summary>
    public static void Prepare(string directory, uint uid, uint gid)
    {
        var parent = Path.GetDirectoryName(directory)!;
        Directory.CreateDirectory(Path.GetDirectoryName(parent)!);
        MakeOwned(parent, 0, 0, 0x1ED /* 0755 */);
        MakeOwned(directory, uid, gid, 0x1C0 /* 0700 */);
    }

    private static void MakeOwned(string path, uint uid, uint gid, uint mode)
    {
        if (Libc.Mkdir(path, mode) != 0 && Libc.LastError != 17 /* EEXIST */)
            SysCallException.ThrowLast($"mkdir({path})");

        // Not following a symlink: a directory, or an error.
        var fd = Libc.Open(path, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
        if (fd < 0)
            SysCallException.ThrowLast($"open({path}) as a directory without following symlinks");
        try
        {
            if (Libc.FChown(fd, uid, gid) != 0)
                SysCallException.ThrowLast($"fchown({path})");
            if (Libc.FChmod(fd, mode) != 0)
                SysCallException.ThrowLast($"fchmod({path})");
        }
        finally
        {
            Libc.Close(fd);
        }
    }
}
