using System.Runtime.InteropServices;

namespace Dispatch.Worker.Http;

/// <summary>The libc calls CGI needs that <see cref="Dispatch.Platform.Interop.Libc"/> does not declare (Linux, glibc ≥ 2.34).</summary>
internal static unsafe partial class CgiNative
{
    public const int EpollCloExec = 0x80000;
    public const uint EpollOut = 0x004;
    public const int XOk = 1;
    public const int PPid = 1;
    public const int WExited = 4;
    public const int WNoHang = 1;
    public const int WNoWait = 0x01000000;
    public const long SysPidfdOpen = 434; // unified syscall number on every architecture

    /// <summary>siginfo_t is 128 bytes; for SIGCHLD-type information si_pid is at offset 16.</summary>
    public const int SigInfoSize = 128;
    public const int SigInfoPidOffset = 16;

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, byte* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "access", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Access(string path, int mode);

    [LibraryImport("libc", EntryPoint = "posix_spawn_file_actions_addchdir_np", StringMarshalling = StringMarshalling.Utf8)]
    public static partial int PosixSpawnFileActionsAddChdir(void* actions, string path);

    [LibraryImport("libc", EntryPoint = "waitid", SetLastError = true)]
    public static partial int WaitId(int idType, uint id, byte* info, int options);
}
