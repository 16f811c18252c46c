using System.Runtime.InteropServices;

namespace Dispatch.Wire.Interop;

/// <summary>
/// The libc calls the wire itself makes, and nothing else: descriptor passing on a SOCK_SEQPACKET socketpair
/// (<see cref="IpcChannel"/>: socketpair, sendmsg, recvmsg, poll, fcntl, close) and sealed memfds
/// (<see cref="SealedBlob"/>: memfd_create, write, pread, lseek, the seals), with errno read as
/// <see cref="LastError"/> and told by <see cref="Describe"/>. Each binding is declared once, here; Dispatch.Platform's
/// <c>Libc</c>, the rest of the native surface, forwards the members its callers use (docs/architecture.md, "Assemblies").
/// </summary>
public static unsafe partial class WireLibc
{
    private const string Lib = "libc";

    public const int AF_UNIX = 1;
    public const int SOCK_SEQPACKET = 5;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1;
    public const int SCM_RIGHTS = 1;
    public const int MSG_TRUNC = 0x20;
    public const int MSG_DONTWAIT = 0x40;
    public const int MSG_CTRUNC = 0x08;
    public const int MSG_NOSIGNAL = 0x4000;
    public const int MSG_CMSG_CLOEXEC = 0x40000000;
    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int EMFILE = 24;
    public const int F_DUPFD_CLOEXEC = 1030;
    public const int F_ADD_SEALS = 1033;
    public const int F_GET_SEALS = 1034;
    public const int F_SEAL_SEAL = 1;
    public const int F_SEAL_SHRINK = 2;
    public const int F_SEAL_GROW = 4;
    public const int F_SEAL_WRITE = 8;
    public const uint MFD_CLOEXEC = 1;
    public const uint MFD_ALLOW_SEALING = 2;
    public const short POLLIN = 1;
    public const short POLLOUT = 4;

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Len;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name;
        public uint NameLen;
        public IoVec* Iov;
        public nuint IovLen;
        public void* Control;
        public nuint ControlLen;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct CmsgHdr
    {
        public nuint Len;
        public int Level;
        public int Type;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short REvents;
    }

    public static int CmsgAlign(int len) => (len + sizeof(nuint) - 1) & ~(sizeof(nuint) - 1);

    public static int CmsgSpace(int dataLen) => CmsgAlign(sizeof(CmsgHdr)) + CmsgAlign(dataLen);

    public static int CmsgLen(int dataLen) => CmsgAlign(sizeof(CmsgHdr)) + dataLen;

    [LibraryImport(Lib, EntryPoint = "socketpair", SetLastError = true)]
    public static partial int SocketPair(int domain, int type, int protocol, int* sv);

    [LibraryImport(Lib, EntryPoint = "sendmsg", SetLastError = true)]
    public static partial nint SendMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport(Lib, EntryPoint = "recvmsg", SetLastError = true)]
    public static partial nint RecvMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Lib, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int Fcntl(int fd, int cmd, int arg);

    [LibraryImport(Lib, EntryPoint = "memfd_create", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int MemfdCreate(string name, uint flags);

    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, byte* buf, nuint count);

    [LibraryImport(Lib, EntryPoint = "pread", SetLastError = true)]
    public static partial nint PRead(int fd, byte* buf, nuint count, long offset);

    [LibraryImport(Lib, EntryPoint = "lseek", SetLastError = true)]
    public static partial long LSeek(int fd, long offset, int whence);

    [LibraryImport(Lib, EntryPoint = "poll", SetLastError = true)]
    public static partial int Poll(PollFd* fds, nuint nfds, int timeout);

    [LibraryImport(Lib, EntryPoint = "strerror")]
    private static partial byte* StrError(int errnum);

    /// <summary>The C library's text for an errno value, e.g. "Permission denied (EACCES=13)".</summary>
    public static string Describe(int errno) => $"{Marshal.PtrToStringUTF8((nint)StrError(errno))} (errno {errno})";

    public static int LastError => Marshal.GetLastPInvokeError();
}
