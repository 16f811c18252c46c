using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Dispatch.Worker.Http;

/// <summary>The few libc calls the confined file provider needs (Linux).</summary>
internal static partial class NativeFileSystem
{
    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const int AtEmptyPath = 0x1000;
    private const uint StatxBasicStats = 0x7ff;
    private const ushort SIfMt = 0xF000;
    private const ushort SIfReg = 0x8000;
    private const ushort SIfDir = 0x4000;

    // Same values on x86-64 and arm64 (asm-generic).
    private const ulong ORdOnly = 0;
    private const ulong ONoCtty = 0x100;
    private const ulong ONonBlock = 0x800;
    private const ulong OCloExec = 0x80000;
    private const ulong OPath = 0x200000;
    private const ulong ResolveNoMagicLinks = 0x02;
    private const ulong ResolveNoSymlinks = 0x04;
    private const long SysOpenat2 = 437; // unified syscall number on every architecture
    private const int ENOSYS = 38;
    private const int ENOENT = 2;
    private const int EPERM = 1;
    private const int ENOTDIR = 20;

    private static volatile bool s_openat2Unavailable;

    internal enum EntryType
    {
        Other,
        File,
        Directory,
    }

    /// <summary>What <see cref="TryStatWithoutSymlinks"/> found.</summary>
    internal enum PlainLookup
    {
        /// <summary>Every component exists and none is a symlink: the path, lexically, is its own real path.</summary>
        Found,

        /// <summary>A component is missing or not a directory (realpath would fail the same way).</summary>
        Missing,

        /// <summary>A symlink on the way, or openat2 unusable, or any other error: resolve the slow way.</summary>
        Undecided,
    }

    /// <summary>The canonical absolute path (every symlink, <c>.</c> and <c>..</c> resolved), or null if it does not resolve.</summary>
    public static string? RealPath(string path)
    {
        if (path.Contains('\0', StringComparison.Ordinal))
        {
            return null;
        }

        var resolved = RealPathNative(path, 0);
        if (resolved == 0)
        {
            return null;
        }

        try
        {
            return Marshal.PtrToStringUTF8(resolved);
        }
        finally
        {
            Free(resolved);
        }
    }

    /// <summary>lstat-like metadata of a path (a final symlink is not followed).</summary>
    public static bool TryStat(string path, out EntryType type, out long length, out DateTimeOffset lastModified) =>
        TryStat(path, out type, out length, out lastModified, out _);

    /// <summary>As above, with the identity of what was found.</summary>
    public static unsafe bool TryStat(string path, out EntryType type, out long length, out DateTimeOffset lastModified, out FileIdentity identity)
    {
        StatxBuffer buffer;
        if (Statx(AtFdCwd, path, AtSymlinkNoFollow, StatxBasicStats, &buffer) != 0)
        {
            type = EntryType.Other;
            length = 0;
            lastModified = default;
            identity = default;
            return false;
        }

        Describe(in buffer, out type, out length, out lastModified, out identity);
        return true;
    }

    /// <summary>
    /// Looks <paramref name="path"/> up in one walk that refuses every symlink (openat2 with O_PATH and
    /// RESOLVE_NO_SYMLINKS, then statx on the descriptor): when that succeeds no component is a symlink, so the path is
    /// its own real path and realpath(3) — one readlink per component — is not needed. O_PATH opens nothing for reading
    /// (no FIFO or device side effects). Three syscalls, whatever the depth.
    /// </summary>
    public static unsafe PlainLookup TryStatWithoutSymlinks(string path, out EntryType type, out long length, out DateTimeOffset lastModified, out FileIdentity identity)
    {
        type = EntryType.Other;
        length = 0;
        lastModified = default;
        identity = default;
        if (s_openat2Unavailable || path.Contains('\0', StringComparison.Ordinal))
        {
            return PlainLookup.Undecided;
        }

        var byteCount = Encoding.UTF8.GetByteCount(path);
        var bytes = byteCount < 512 ? stackalloc byte[byteCount + 1] : new byte[byteCount + 1];
        Encoding.UTF8.GetBytes(path, bytes);
        bytes[byteCount] = 0;
        var how = new OpenHow
        {
            Flags = OPath | OCloExec,
            Mode = 0,
            Resolve = ResolveNoSymlinks | ResolveNoMagicLinks,
        };

        long fd;
        fixed (byte* p = bytes)
        {
            fd = Syscall(SysOpenat2, AtFdCwd, (long)p, (long)&how, sizeof(OpenHow));
        }

        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno is ENOSYS or EPERM)
            {
                s_openat2Unavailable = true;
            }

            return errno is ENOENT or ENOTDIR ? PlainLookup.Missing : PlainLookup.Undecided;
        }

        try
        {
            StatxBuffer buffer;
            if (Statx((int)fd, string.Empty, AtEmptyPath, StatxBasicStats, &buffer) != 0)
            {
                return PlainLookup.Undecided;
            }

            Describe(in buffer, out type, out length, out lastModified, out identity);
            return PlainLookup.Found;
        }
        finally
        {
            Dispatch.Platform.Interop.Libc.Close((int)fd);
        }
    }

    /// <summary>
    /// Opens <paramref name="realPath"/> (an absolute path without symlinks, as returned by <see cref="RealPath"/>) for
    /// reading, refusing to follow any symlink on the way (openat2 RESOLVE_NO_SYMLINKS), so a component swapped for a
    /// symlink after the confinement check cannot redirect the open. Falls back to a plain open where openat2 is not
    /// available. Non-blocking, so a FIFO swapped in cannot hang the request; only regular files are accepted.
    /// </summary>
    public static Stream OpenRegularFileForRead(string realPath)
    {
        var handle = OpenRegularFile(realPath, out var length, out _);
        return new FileReadStream(handle, length);
    }

    /// <summary>As <see cref="OpenRegularFileForRead"/>, but returns the descriptor, and the file's length and identity
    /// at open.</summary>
    public static unsafe SafeFileHandle OpenRegularFile(string realPath, out long length, out FileIdentity identity)
    {
        SafeFileHandle handle;
        if (s_openat2Unavailable)
        {
            handle = OpenPlain(realPath);
        }
        else if (!TryOpenat2(realPath, out handle, out var errno))
        {
            if (errno == ENOENT)
            {
                throw new FileNotFoundException("The file could not be opened inside the document root.", realPath);
            }

            if (errno is not (ENOSYS or EPERM))
            {
                // EACCES (the tenant's own permissions), ELOOP (a symlink swapped in after the check), EMFILE…: worth
                // the vhost's error log (RequestHandler answers 404 and logs it).
                throw new UnreadableFileException(realPath, Dispatch.Platform.Interop.Libc.Describe(errno));
            }

            // No openat2 (old kernel, or a seccomp filter that refuses it): the realpath check stands alone.
            s_openat2Unavailable = true;
            handle = OpenPlain(realPath);
        }

        try
        {
            StatxBuffer buffer;
            if (Statx((int)handle.DangerousGetHandle(), string.Empty, AtEmptyPath, StatxBasicStats, &buffer) != 0)
            {
                throw new FileNotFoundException("The file could not be examined.", realPath);
            }

            Describe(in buffer, out var type, out length, out _, out identity);
            if (type != EntryType.File)
            {
                throw new FileNotFoundException("Not a regular file.", realPath);
            }

            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private static SafeFileHandle OpenPlain(string path)
    {
        try
        {
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new UnreadableFileException(path, e.Message);
        }
    }

    private static unsafe bool TryOpenat2(string path, out SafeFileHandle handle, out int errno)
    {
        var byteCount = Encoding.UTF8.GetByteCount(path);
        var bytes = new byte[byteCount + 1];
        Encoding.UTF8.GetBytes(path, bytes);
        var how = new OpenHow
        {
            Flags = ORdOnly | ONoCtty | ONonBlock | OCloExec,
            Mode = 0,
            Resolve = ResolveNoSymlinks | ResolveNoMagicLinks,
        };

        long fd;
        fixed (byte* p = bytes)
        {
            fd = Syscall(SysOpenat2, AtFdCwd, (long)p, (long)&how, sizeof(OpenHow));
        }

        if (fd < 0)
        {
            errno = Marshal.GetLastPInvokeError();
            handle = new SafeFileHandle();
            return false;
        }

        errno = 0;
        handle = new SafeFileHandle((nint)fd, ownsHandle: true);
        return true;
    }

    private static void Describe(in StatxBuffer buffer, out EntryType type, out long length, out DateTimeOffset lastModified, out FileIdentity identity)
    {
        identity = new FileIdentity(buffer.DevMajor, buffer.DevMinor, buffer.Inode, buffer.Size, buffer.MtimeSec, buffer.MtimeNsec, buffer.CtimeSec, buffer.CtimeNsec);
        type = (buffer.Mode & SIfMt) switch
        {
            SIfReg => EntryType.File,
            SIfDir => EntryType.Directory,
            _ => EntryType.Other,
        };
        length = (long)buffer.Size;
        lastModified = DateTimeOffset.FromUnixTimeSeconds(buffer.MtimeSec).AddTicks(buffer.MtimeNsec / 100);
    }

    [LibraryImport("libc", EntryPoint = "realpath", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint RealPathNative(string path, nint resolved);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void Free(nint pointer);

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int Statx(int dirFd, string path, int flags, uint mask, StatxBuffer* buffer);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, long arg1, long arg2, long arg3, long arg4);

    [StructLayout(LayoutKind.Sequential)]
    private struct OpenHow
    {
        public ulong Flags;
        public ulong Mode;
        public ulong Resolve;
    }

    /// <summary>struct statx (linux/stat.h): the same layout on every architecture.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private struct StatxBuffer
    {
        [FieldOffset(28)]
        public ushort Mode;

        [FieldOffset(32)]
        public ulong Inode;

        [FieldOffset(40)]
        public ulong Size;

        [FieldOffset(96)]
        public long CtimeSec;

        [FieldOffset(104)]
        public uint CtimeNsec;

        [FieldOffset(112)]
        public long MtimeSec;

        [FieldOffset(120)]
        public uint MtimeNsec;

        [FieldOffset(136)]
        public uint DevMajor;

        [FieldOffset(140)]
        public uint DevMinor;
    }
}

/// <summary>Which file, in which state: device, inode, size, modification and change times (statx).</summary>
internal readonly record struct FileIdentity(uint DevMajor, uint DevMinor, ulong Inode, ulong Size, long MtimeSec, uint MtimeNsec, long CtimeSec, uint CtimeNsec);

/// <summary>
/// A file under a vhost's root exists but the worker could not open it (permission denied, a symlink swapped in, out of
/// descriptors). Deliberately not a <see cref="FileNotFoundException"/>, which StaticFiles swallows: it reaches
/// <see cref="RequestHandler"/>, which answers 404 (as for anything refused) and logs the reason to the vhost's error log.
/// </summary>
internal sealed class UnreadableFileException(string path, string reason) : IOException(reason)
{
    public string FileName { get; } = path;
}
