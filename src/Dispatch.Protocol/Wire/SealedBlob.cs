using Dispatch.Protocol.Interop;

namespace Dispatch.Protocol.Wire;

/// <summary>
/// Payloads too large for one datagram (route snapshots with certificates) travel as a memfd sealed
/// against writing, growing and shrinking: the receiver knows the bytes cannot change under it.
/// </summary>
public static unsafe class SealedBlob
{
    private const int RequiredSeals = Libc.F_SEAL_WRITE | Libc.F_SEAL_SHRINK | Libc.F_SEAL_GROW | Libc.F_SEAL_SEAL;

    /// <summary>A new sealed memfd holding <paramref name="content"/>; the caller owns (and closes) the descriptor.</summary>
    public static int Create(string name, ReadOnlySpan<byte> content)
    {
        var fd = Libc.MemfdCreate(name, Libc.MFD_CLOEXEC | Libc.MFD_ALLOW_SEALING);
        if (fd < 0)
            SysCallException.ThrowLast("memfd_create");
        try
        {
            fixed (byte* p = content)
            {
                var done = 0;
                while (done < content.Length)
                {
                    var n = Libc.Write(fd, p + done, (nuint)(content.Length - done));
                    if (n < 0)
                    {
                        if (Libc.LastError == Libc.EINTR)
                            continue;
                        SysCallException.ThrowLast("write(memfd)");
                    }

                    done += (int)n;
                }
            }

            if (Libc.Fcntl(fd, Libc.F_ADD_SEALS, RequiredSeals) != 0)
                SysCallException.ThrowLast("fcntl(F_ADD_SEALS)");
            return fd;
        }
        catch
        {
            Libc.Close(fd);
            throw;
        }
    }

    /// <summary>Reads a received blob after checking it is sealed and at most <paramref name="maxBytes"/> long.</summary>
    public static byte[] Read(int fd, int maxBytes)
    {
        var seals = Libc.Fcntl(fd, Libc.F_GET_SEALS, 0);
        if (seals < 0)
            throw new WireException($"received blob is not a memfd: {Libc.Describe(Libc.LastError)}");
        if ((seals & RequiredSeals) != RequiredSeals)
            throw new WireException($"received blob is not sealed (seals 0x{seals:x})");
        var size = Libc.LSeek(fd, 0, 2 /* SEEK_END */);
        if (size < 0)
            SysCallException.ThrowLast("lseek(memfd)");
        if (size > maxBytes)
            throw new WireException($"received blob of {size} bytes exceeds its {maxBytes}-byte limit");
        var bytes = new byte[size];
        fixed (byte* p = bytes)
        {
            var done = 0L;
            while (done < size)
            {
                var n = Libc.PRead(fd, p + done, (nuint)(size - done), done);
                if (n < 0)
                {
                    if (Libc.LastError == Libc.EINTR)
                        continue;
                    SysCallException.ThrowLast("pread(memfd)");
                }

                if (n == 0)
                    throw new WireException("received blob shorter than its size");
                done += n;
            }
        }

        return bytes;
    }
}
