using Dispatch.Platform.Interop;

namespace Dispatch.Master.Files;

/// <summary>
/// Reads a file only root may have written (a certificate, a key, a credentials file): opened without following a
/// symlink, then checked on the open descriptor — a regular file, owned by root, writable by no one else, at most a
/// given size — and read whole, so what was checked is what is read.
/// </summary>
internal static unsafe class RootOwnedFile
{
    /// <summary>The file's bytes; null with <paramref name="problem"/> ("PATH: reason") when it cannot be trusted or read.</summary>
    public static byte[]? TryRead(string path, long maxBytes, out string? problem)
    {
        problem = null;
        var fd = Libc.Open(path, Libc.O_RDONLY | Libc.O_CLOEXEC | Libc.O_NOFOLLOW, 0);
        if (fd < 0)
        {
            problem = $"{path}: {Libc.Describe(Libc.LastError)}";
            return null;
        }

        try
        {
            Libc.Stat st;
            if (Libc.FStat(fd, &st) != 0)
                problem = $"{path}: {Libc.Describe(Libc.LastError)}";
            else if ((st.Mode & Libc.S_IFMT) != Libc.S_IFREG)
                problem = $"{path}: not a regular file";
            else if (st.Uid != 0)
                problem = $"{path}: owned by uid {st.Uid}, not root";
            else if ((st.Mode & 0x12) != 0)
                problem = $"{path}: writable by group or others (mode {Convert.ToString(st.Mode & 0xFFF, 8)})";
            else if (st.Size > maxBytes)
                problem = $"{path}: {st.Size} bytes, more than the {maxBytes}-byte limit";
            if (problem is not null)
                return null;

            var buffer = new byte[st.Size];
            var done = 0;
            fixed (byte* p = buffer)
            {
                while (done < buffer.Length)
                {
                    var n = Libc.PRead(fd, p + done, (nuint)(buffer.Length - done), done);
                    if (n <= 0)
                    {
                        problem = $"{path}: short read";
                        return null;
                    }

                    done += (int)n;
                }
            }

            return buffer;
        }
        finally
        {
            Libc.Close(fd);
        }
    }
}
