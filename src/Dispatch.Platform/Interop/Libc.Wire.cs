using Dispatch.Wire.Interop;

namespace Dispatch.Platform.Interop;

/// <summary>
/// The members Dispatch.Wire declares for its own use (<see cref="WireLibc"/>: the channel's descriptor passing, sealed
/// memfds, close and errno), under their <see cref="Libc"/> names, so that Libc stays the one native surface its callers
/// see while every binding is declared once. The structs (msghdr, iovec, cmsghdr, pollfd) are WireLibc's own.
/// </summary>
public static unsafe partial class Libc
{
    public const int AF_UNIX = WireLibc.AF_UNIX;
    public const int SOCK_SEQPACKET = WireLibc.SOCK_SEQPACKET;
    public const int SOCK_CLOEXEC = WireLibc.SOCK_CLOEXEC;
    public const int SOL_SOCKET = WireLibc.SOL_SOCKET;
    public const int SCM_RIGHTS = WireLibc.SCM_RIGHTS;
    public const int MSG_TRUNC = WireLibc.MSG_TRUNC;
    public const int MSG_DONTWAIT = WireLibc.MSG_DONTWAIT;
    public const int MSG_CTRUNC = WireLibc.MSG_CTRUNC;
    public const int MSG_NOSIGNAL = WireLibc.MSG_NOSIGNAL;
    public const int MSG_CMSG_CLOEXEC = WireLibc.MSG_CMSG_CLOEXEC;
    public const int EINTR = WireLibc.EINTR;
    public const int EAGAIN = WireLibc.EAGAIN;
    public const int EMFILE = WireLibc.EMFILE;
    public const int F_DUPFD_CLOEXEC = WireLibc.F_DUPFD_CLOEXEC;
    public const int F_ADD_SEALS = WireLibc.F_ADD_SEALS;
    public const int F_GET_SEALS = WireLibc.F_GET_SEALS;
    public const int F_SEAL_SEAL = WireLibc.F_SEAL_SEAL;
    public const int F_SEAL_SHRINK = WireLibc.F_SEAL_SHRINK;
    public const int F_SEAL_GROW = WireLibc.F_SEAL_GROW;
    public const int F_SEAL_WRITE = WireLibc.F_SEAL_WRITE;
    public const uint MFD_CLOEXEC = WireLibc.MFD_CLOEXEC;
    public const uint MFD_ALLOW_SEALING = WireLibc.MFD_ALLOW_SEALING;
    public const short POLLIN = WireLibc.POLLIN;
    public const short POLLOUT = WireLibc.POLLOUT;

    public static int SocketPair(int domain, int type, int protocol, int* sv) => WireLibc.SocketPair(domain, type, protocol, sv);

    public static int Close(int fd) => WireLibc.Close(fd);

    public static int Poll(WireLibc.PollFd* fds, nuint count, int timeout) => WireLibc.Poll(fds, count, timeout);

    public static int Fcntl(int fd, int cmd, int arg) => WireLibc.Fcntl(fd, cmd, arg);

    public static int MemfdCreate(string name, uint flags) => WireLibc.MemfdCreate(name, flags);

    public static nint Write(int fd, byte* buf, nuint count) => WireLibc.Write(fd, buf, count);

    public static nint PRead(int fd, byte* buf, nuint count, long offset) => WireLibc.PRead(fd, buf, count, offset);

    public static long LSeek(int fd, long offset, int whence) => WireLibc.LSeek(fd, offset, whence);

    /// <summary>The C library's text for an errno value, e.g. "Permission denied (errno 13)".</summary>
    public static string Describe(int errno) => WireLibc.Describe(errno);

    public static int LastError => WireLibc.LastError;
}
