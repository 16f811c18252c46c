using System.Runtime.InteropServices;
using Dispatch.Wire.Interop;

namespace Dispatch.Platform.Interop;

/// <summary>
/// The small set of libc entry points Dispatch needs beyond what .NET exposes. Every call that can
/// fail sets errno, read with <see cref="Marshal.GetLastPInvokeError"/> (Mono.Posix 1.0.0 loses errno
/// after a failed sendmsg, so descriptor passing and spawning use these declarations instead). The calls
/// the wire makes itself (descriptor passing, sealed memfds, close, errno) are declared in Dispatch.Wire's
/// <see cref="Dispatch.Wire.Interop.WireLibc"/> and reachable here under the same names (Libc.Wire.cs).
/// </summary>
public static unsafe partial class Libc
{
    private const string Lib = "libc";

    public const int SOCK_STREAM = 1;

    public const int EACCES = 13;
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int EPIPE = 32;
    public const int ECHILD = 10;

    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    public const int O_RDWR = 2;
    public const int O_CLOEXEC = 0x80000;
    public const int O_PATH = 0x200000;
    public const int O_NOFOLLOW = 0x20000;
    public const int O_DIRECTORY = 0x10000;

    public const int F_GETFD = 1;
    public const int F_SETFD = 2;
    public const int F_GETFL = 3;
    public const int F_SETFL = 4;
    public const int FD_CLOEXEC = 1;
    public const int O_NONBLOCK = 0x800;

    public const int PR_SET_PDEATHSIG = 1;
    public const int PR_SET_DUMPABLE = 4;
    public const int PR_GET_DUMPABLE = 3;
    public const int PR_CAPBSET_DROP = 24;
    public const int PR_SET_NO_NEW_PRIVS = 38;
    public const int PR_GET_NO_NEW_PRIVS = 39;
    public const int PR_CAP_AMBIENT = 47;
    public const int PR_CAP_AMBIENT_CLEAR_ALL = 4;

    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
    public const int WNOHANG = 1;

    public const int RLIMIT_CPU = 0;
    public const int RLIMIT_FSIZE = 1;
    public const int RLIMIT_CORE = 4;
    public const int RLIMIT_NPROC = 6;
    public const int RLIMIT_NOFILE = 7;
    public const int RLIMIT_AS = 9;

    [StructLayout(LayoutKind.Sequential)]
    public struct RLimit
    {
        public ulong Cur;
        public ulong Max;
    }

    /// <summary>glibc: gives the free memory of every malloc arena back to the system; 1 if any was released.</summary>
    [LibraryImport(Lib, EntryPoint = "malloc_trim")]
    public static partial int MallocTrim(nuint pad);

    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags, int mode);

    [LibraryImport(Lib, EntryPoint = "openat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int OpenAt(int dirfd, string path, int flags, int mode);

    [LibraryImport(Lib, EntryPoint = "pipe2", SetLastError = true)]
    public static partial int Pipe2(int* fds, int flags);

    [LibraryImport(Lib, EntryPoint = "prctl", SetLastError = true)]
    public static partial int Prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport(Lib, EntryPoint = "setresuid", SetLastError = true)]
    public static partial int SetResUid(uint ruid, uint euid, uint suid);

    [LibraryImport(Lib, EntryPoint = "setresgid", SetLastError = true)]
    public static partial int SetResGid(uint rgid, uint egid, uint sgid);

    [LibraryImport(Lib, EntryPoint = "getresuid", SetLastError = true)]
    public static partial int GetResUid(uint* ruid, uint* euid, uint* suid);

    [LibraryImport(Lib, EntryPoint = "getresgid", SetLastError = true)]
    public static partial int GetResGid(uint* rgid, uint* egid, uint* sgid);

    [LibraryImport(Lib, EntryPoint = "setgroups", SetLastError = true)]
    public static partial int SetGroups(nuint size, uint* list);

    [LibraryImport(Lib, EntryPoint = "getgroups", SetLastError = true)]
    public static partial int GetGroups(int size, uint* list);

    [LibraryImport(Lib, EntryPoint = "geteuid")]
    public static partial uint GetEUid();

    [LibraryImport(Lib, EntryPoint = "getpid")]
    public static partial int GetPid();

    [LibraryImport(Lib, EntryPoint = "setrlimit", SetLastError = true)]
    public static partial int SetRLimit(int resource, RLimit* rlim);

    [LibraryImport(Lib, EntryPoint = "getrlimit", SetLastError = true)]
    public static partial int GetRLimit(int resource, RLimit* rlim);

    [LibraryImport(Lib, EntryPoint = "syscall", SetLastError = true)]
    public static partial nint Syscall4(nint number, nint a1, nint a2, nint a3, nint a4);

    [LibraryImport(Lib, EntryPoint = "execve", SetLastError = true)]
    public static partial int Execve(byte* path, byte** argv, byte** envp);

    [LibraryImport(Lib, EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int sig);

    [LibraryImport(Lib, EntryPoint = "waitpid", SetLastError = true)]
    public static partial int WaitPid(int pid, int* status, int options);

    [LibraryImport(Lib, EntryPoint = "getpwnam_r", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int GetPwNamR(string name, PasswdEntry* pwd, byte* buf, nuint buflen, PasswdEntry** result);

    [LibraryImport(Lib, EntryPoint = "getgrnam_r", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int GetGrNamR(string name, GroupEntry* grp, byte* buf, nuint buflen, GroupEntry** result);

    [StructLayout(LayoutKind.Sequential)]
    public struct PasswdEntry
    {
        public byte* Name;
        public byte* Passwd;
        public uint Uid;
        public uint Gid;
        public byte* Gecos;
        public byte* Dir;
        public byte* Shell;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct GroupEntry
    {
        public byte* Name;
        public byte* Passwd;
        public uint Gid;
        public byte** Members;
    }

    // posix_spawn: the attribute and file-action objects are opaque; glibc's are 336 and 80 bytes.
    public const int PosixSpawnAttrSize = 512;
    public const int PosixSpawnFileActionsSize = 256;
    public const short POSIX_SPAWN_SETPGROUP = 0x02;
    public const short POSIX_SPAWN_SETSIGDEF = 0x04;
    public const short POSIX_SPAWN_SETSIGMASK = 0x08;

    [LibraryImport(Lib, EntryPoint = "posix_spawn")]
    public static partial int PosixSpawn(int* pid, byte* path, void* fileActions, void* attr, byte** argv, byte** envp);

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_init")]
    public static partial int PosixSpawnFileActionsInit(void* actions);

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_destroy")]
    public static partial int PosixSpawnFileActionsDestroy(void* actions);

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_adddup2")]
    public static partial int PosixSpawnFileActionsAddDup2(void* actions, int fd, int newfd);

    [LibraryImport(Lib, EntryPoint = "posix_spawn_file_actions_addclosefrom_np")]
    public static partial int PosixSpawnFileActionsAddCloseFrom(void* actions, int from);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_init")]
    public static partial int PosixSpawnAttrInit(void* attr);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_destroy")]
    public static partial int PosixSpawnAttrDestroy(void* attr);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_setflags")]
    public static partial int PosixSpawnAttrSetFlags(void* attr, short flags);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_setpgroup")]
    public static partial int PosixSpawnAttrSetPGroup(void* attr, int pgroup);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_setsigmask")]
    public static partial int PosixSpawnAttrSetSigMask(void* attr, void* sigset);

    [LibraryImport(Lib, EntryPoint = "posix_spawnattr_setsigdefault")]
    public static partial int PosixSpawnAttrSetSigDefault(void* attr, void* sigset);

    [LibraryImport(Lib, EntryPoint = "sigemptyset")]
    public static partial int SigEmptySet(void* set);

    [LibraryImport(Lib, EntryPoint = "sigfillset")]
    public static partial int SigFillSet(void* set);

    /// <summary>
    /// sigaction(2) through glibc. Its struct sigaction (x86_64 and aarch64): the handler pointer first, then a
    /// 128-byte mask, the flags and the restorer, 152 bytes in all; callers pass <see cref="SigActionSize"/> bytes.
    /// </summary>
    [LibraryImport(Lib, EntryPoint = "sigaction", SetLastError = true)]
    public static partial int SigAction(int sig, void* action, void* oldAction);

    public const int SigActionSize = 256;
    public const int SA_SIGINFO = 4;
    private const int SigActionFlagsOffset = 8 + 128;

    /// <summary>
    /// Resets <paramref name="sig"/> to its default action if it is ignored (SIG_IGN, inherited through exec);
    /// returns whether it was. A handler or the default is left as it is.
    /// </summary>
    public static bool ResetIfIgnored(int sig)
    {
        var old = stackalloc byte[SigActionSize];
        var fresh = stackalloc byte[SigActionSize];
        new Span<byte>(old, SigActionSize).Clear();
        new Span<byte>(fresh, SigActionSize).Clear(); // SIG_DFL (0), an empty mask, no flags
        if (SigAction(sig, null, old) != 0)
            SysCallException.ThrowLast($"sigaction({sig})");
        if (!IsIgnored(old))
            return false;
        if (SigAction(sig, fresh, null) != 0)
            SysCallException.ThrowLast($"sigaction({sig}, SIG_DFL)");
        return true;
    }

    /// <summary>Whether <paramref name="sig"/> is ignored (SIG_IGN) in this process now.</summary>
    public static bool IsIgnored(int sig)
    {
        var old = stackalloc byte[SigActionSize];
        new Span<byte>(old, SigActionSize).Clear();
        if (SigAction(sig, null, old) != 0)
            SysCallException.ThrowLast($"sigaction({sig})");
        return IsIgnored(old);
    }

    private static bool IsIgnored(byte* action) =>
        *(nint*)action == 1 /* SIG_IGN */ && (*(int*)(action + SigActionFlagsOffset) & SA_SIGINFO) == 0;

    /// <summary>struct stat on x86_64 glibc (144 bytes); only the fields Dispatch reads are named.</summary>
    [StructLayout(LayoutKind.Sequential, Size = 144)]
    public struct Stat
    {
        public ulong Dev;
        public ulong Ino;
        public ulong NLink;
        public uint Mode;
        public uint Uid;
        public uint Gid;
        private readonly int _pad0;
        public ulong RDev;
        public long Size;
    }

    public const uint S_IFMT = 0xF000;
    public const uint S_IFDIR = 0x4000;
    public const uint S_IFREG = 0x8000;
    public const uint S_IFLNK = 0xA000;
    public const uint S_IFSOCK = 0xC000;
    public const uint S_ISVTX = 0x200;

    [LibraryImport(Lib, EntryPoint = "lstat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int LStat(string path, Stat* buf);

    [LibraryImport(Lib, EntryPoint = "fstat", SetLastError = true)]
    public static partial int FStat(int fd, Stat* buf);

    public const uint EPOLLIN = 0x001;
    public const uint EPOLLERR = 0x008;
    public const uint EPOLLHUP = 0x010;
    public const uint EPOLLOUT = 0x004;
    public const uint EPOLLRDHUP = 0x2000;
    public const uint EPOLLONESHOT = 1u << 30;
    public const int EPOLL_CTL_ADD = 1;
    public const int EPOLL_CTL_DEL = 2;
    public const int EPOLL_CTL_MOD = 3;
    public const int SHUT_WR = 1;

    [StructLayout(LayoutKind.Sequential, Pack = 4)]
    public struct EpollEvent
    {
        public uint Events;
        public ulong Data;
    }

    [LibraryImport(Lib, EntryPoint = "epoll_create1", SetLastError = true)]
    public static partial int EpollCreate1(int flags);

    [LibraryImport(Lib, EntryPoint = "epoll_ctl", SetLastError = true)]
    public static partial int EpollCtl(int epfd, int op, int fd, EpollEvent* ev);

    [LibraryImport(Lib, EntryPoint = "epoll_wait", SetLastError = true)]
    public static partial int EpollWait(int epfd, EpollEvent* events, int maxEvents, int timeout);

    [LibraryImport(Lib, EntryPoint = "recv", SetLastError = true)]
    public static partial nint Recv(int fd, byte* buf, nuint len, int flags);

    [LibraryImport(Lib, EntryPoint = "send", SetLastError = true)]
    public static partial nint Send(int fd, byte* buf, nuint len, int flags);

    [LibraryImport(Lib, EntryPoint = "sendfile", SetLastError = true)]
    public static partial nint SendFile(int outFd, int inFd, long* offset, nuint count);

    [LibraryImport(Lib, EntryPoint = "shutdown", SetLastError = true)]
    public static partial int Shutdown(int fd, int how);

    /// <summary>getpeername(2): 0 while the socket has a peer; -1 with ENOTCONN once it was reset (or never connected).</summary>
    [LibraryImport(Lib, EntryPoint = "getpeername", SetLastError = true)]
    public static partial int GetPeerName(int fd, byte* address, uint* length);

    /// <summary>accept4(2): the connection's descriptor, its peer's address in <paramref name="address"/>; flags SOCK_CLOEXEC, SOCK_NONBLOCK.</summary>
    [LibraryImport(Lib, EntryPoint = "accept4", SetLastError = true)]
    public static partial int Accept4(int fd, byte* address, uint* length, int flags);

    /// <summary>eventfd(2): a counter to wake a thread asleep in poll(2) with (flags EFD_CLOEXEC, EFD_NONBLOCK).</summary>
    [LibraryImport(Lib, EntryPoint = "eventfd", SetLastError = true)]
    public static partial int EventFd(uint initial, int flags);

    public const int SOCK_NONBLOCK = 0x800;
    public const int EFD_CLOEXEC = 0x80000;
    public const int EFD_NONBLOCK = 0x800;
    public const int ECONNABORTED = 103;

    public const int O_APPEND = 0x400;
    public const int O_CREAT = 0x40;
    public const int O_TRUNC = 0x200;

    [LibraryImport(Lib, EntryPoint = "fchown", SetLastError = true)]
    public static partial int FChown(int fd, uint owner, uint group);

    [LibraryImport(Lib, EntryPoint = "fchmod", SetLastError = true)]
    public static partial int FChmod(int fd, uint mode);

    public const int ENOTDIR = 20;
    public const int EEXIST = 17;
    public const int CLONE_NEWNS = 0x20000;
    public const ulong MS_RDONLY = 1;
    public const ulong MS_NOSUID = 2;
    public const ulong MS_NODEV = 4;
    public const ulong MS_NOEXEC = 8;
    public const ulong MS_REMOUNT = 32;
    public const ulong MS_BIND = 4096;
    public const ulong MS_REC = 16384;
    public const ulong MS_PRIVATE = 1 << 18;
    public const int MNT_DETACH = 2;

    [LibraryImport(Lib, EntryPoint = "unshare", SetLastError = true)]
    public static partial int Unshare(int flags);

    [LibraryImport(Lib, EntryPoint = "mount", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Mount(string? source, string target, string? fsType, ulong flags, string? data);

    [LibraryImport(Lib, EntryPoint = "umount2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Umount2(string target, int flags);

    [LibraryImport(Lib, EntryPoint = "mkdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Mkdir(string path, uint mode);

    [LibraryImport(Lib, EntryPoint = "chmod", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Chmod(string path, uint mode);

    [LibraryImport(Lib, EntryPoint = "symlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Symlink(string target, string linkPath);

    [LibraryImport(Lib, EntryPoint = "chdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Chdir(string path);

    /// <summary>pivot_root(2) has no C library wrapper: the raw system call (x86_64 155, arm64 41).</summary>
    public static int PivotRoot(string newRoot, string putOld)
    {
        var number = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => 155,
            Architecture.Arm64 => 41,
            var other => throw new PlatformNotSupportedException($"pivot_root on {other}"),
        };
        using var strings = new NativeStrings();
        return (int)Syscall4(number, (nint)strings.Utf8(newRoot), (nint)strings.Utf8(putOld), 0, 0);
    }

    public const ulong RESOLVE_NO_MAGICLINKS = 0x02;
    public const ulong RESOLVE_NO_SYMLINKS = 0x04;
    public const int ELOOP = 40;

    /// <summary>struct open_how for openat2(2).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct OpenHow
    {
        public ulong Flags;
        public ulong Mode;
        public ulong Resolve;
    }

    /// <summary>openat2(AT_FDCWD, path, how): the fd, or -1 with errno.</summary>
    public static int OpenAt2(string path, ulong flags, ulong resolve)
    {
        var number = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 or Architecture.Arm64 => 437,
            var other => throw new PlatformNotSupportedException($"openat2 on {other}"),
        };
        using var strings = new NativeStrings();
        var how = new OpenHow { Flags = flags, Resolve = resolve };
        return (int)Syscall4(number, -100 /* AT_FDCWD */, (nint)strings.Utf8(path), (nint)(&how), sizeof(OpenHow));
    }

    [LibraryImport(Lib, EntryPoint = "setfsuid")]
    public static partial int SetFsUid(uint uid);

    [LibraryImport(Lib, EntryPoint = "setfsgid")]
    public static partial int SetFsGid(uint gid);
}
