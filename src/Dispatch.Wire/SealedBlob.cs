using Dispatch.Wire.Interop;

namespace Dispatch.Wire;

/// <summary>
/// Payloads too large for one datagram (route snapshots with certificates) travel as a memfd sealed
/// against writing, growing and shrinking: the receiver knows the bytes cannot change under it.
/// </summary>
public static unsafe class SealedBlob
{
    private const int RequiredSeals = WireLibc.F_SEAL_WRITE | WireLibc.F_SEAL_SHRINK | WireLibc.F_SEAL_GROW | WireLibc.F_SEAL_SEAL;

    /// <summary>A new sealed memfd holding <paramref name="content"/>; the caller owns (and closes) the descriptor.</summary>
    public static int Create(string name, ReadOnlySpan<byte> content)
    {
        var fd = WireLibc.MemfdCreate(name, WireLibc.MFD_CLOEXEC | WireLibc.MFD_ALLOW_SEALING);
        if (fd < 0)
            SysCallException.ThrowLast("memfd_create");
        try
        {
            fixed (byte* p = content)
            {
                var done = 0;
                while (done < content.Length)
                {
                    var n = WireLibc.Write(fd, p + done, (nuint)(content.Length - done));
                    if (n < 0)
                    {
                        if (WireLibc.LastError == WireLibc.EINTR)
                            continue;
                        SysCallException.ThrowLast("write(memfd)");
                    }

                    done += (int)n;
                }
            }

            if (WireLibc.Fcntl(fd, WireLibc.F_ADD_SEALS, RequiredSeals) != 0)
                SysCallException.ThrowLast("fcntl(F_ADD_SEALS)");
            return fd;
        }
        catch
        {
            WireLibc.Close(fd);
            throw;
        }
    }

    /// <summary>Reads a received blob after checking it is sealed and at most <paramref name="maxBytes"/> long.</summary>
    public static byte[] Read(int fd, int maxBytes)
    {
        var seals = WireLibc.Fcntl(fd, WireLibc.F_GET_SEALS, 0);
        if (seals < 0)
            throw new WireException($"received blob is not a memfd: {WireLibc.Describe(WireLibc.LastError)}");
        if ((seals & RequiredSeals) != RequiredSeals)
            throw new WireException($"received blob is not sealed (seals 0x{seals:x})");
        var size = WireLibc.LSeek(fd, 0, 2 /* SEEK_END */);
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
                var n = WireLibc.PRead(fd, p + done, (nuint)(size - done), done);
                if (n < 0)
                {
                    if (WireLibc.LastError == WireLibc.EINTR)
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
