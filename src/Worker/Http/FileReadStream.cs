using System.Runtime.InteropServices;
using Dispatch.Platform.Interop;
using Microsoft.Win32.SafeHandles;

namespace Dispatch.Worker.Http;

/// <summary>
/// A read-only, seekable stream over an open regular file that reads with pread(2) at its own position.
/// </summary>
/// <remarks>
/// Replaces <see cref="FileStream"/> for static files: FileStream on a raw descriptor asks the kernel for the position
/// (lseek) when built and again when read, and on Linux its ReadAsync on a non-async handle queues the read to another
/// thread-pool thread (a thread hop and a futex wake per read). A static file's pages are normally cached, so the read
/// is done inline, as nginx does without aio; the length is the one statx gave at open.
/// <para>With <c>shared</c> the handle belongs to the open-file cache (<see cref="ConfinedFileProvider"/>): the stream
/// holds one reference on it (taken by the caller with <see cref="SafeHandle.DangerousAddRef"/>) and gives it back on
/// dispose, so the descriptor stays open while the stream reads even if the cache lets it go meanwhile; otherwise the
/// stream owns the handle and closes it.</para>
/// </remarks>
internal sealed class FileReadStream(SafeFileHandle handle, long length, bool shared = false) : Stream
{
    private const int EINTR = 4;
    private long _position;
    private int _disposed;

    /// <summary>The descriptor read (for <c>sendfile</c>: <see cref="DirectSocketWriter.SendFileAsync"/>); valid while the stream is.</summary>
    internal SafeFileHandle Handle => handle;

    public override bool CanRead => !IsDisposed;

    public override bool CanSeek => !IsDisposed;

    public override bool CanWrite => false;

    public override long Length => length;

    private bool IsDisposed => Volatile.Read(ref _disposed) != 0 || handle.IsClosed;

    public override long Position
    {
        get => _position;
        set => Seek(value, SeekOrigin.Begin);
    }

    public override unsafe int Read(Span<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        if (buffer.IsEmpty)
        {
            return 0;
        }

        var added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            var fd = (int)handle.DangerousGetHandle();
            while (true)
            {
                nint read;
                fixed (byte* p = buffer)
                {
                    read = Libc.PRead(fd, p, (nuint)buffer.Length, _position);
                }

                if (read >= 0)
                {
                    _position += read;
                    return (int)read;
                }

                var errno = Marshal.GetLastPInvokeError();
                if (errno != EINTR)
                {
                    throw new IOException($"Reading the file failed: {Libc.Describe(errno)}");
                }
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<int>(cancellationToken);
        }

        try
        {
            return ValueTask.FromResult(Read(buffer.Span));
        }
        catch (Exception e)
        {
            return ValueTask.FromException<int>(e);
        }
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override long Seek(long offset, SeekOrigin origin)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        var target = origin switch
        {
            SeekOrigin.Begin => offset,
            SeekOrigin.Current => _position + offset,
            SeekOrigin.End => length + offset,
            _ => throw new ArgumentOutOfRangeException(nameof(origin)),
        };
        if (target < 0)
        {
            throw new IOException("An attempt was made to move the position before the beginning of the stream.");
        }

        _position = target;
        return target;
    }

    public override void Flush()
    {
    }

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing && Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            if (shared)
            {
                handle.DangerousRelease();
            }
            else
            {
                handle.Dispose();
            }
        }

        base.Dispose(disposing);
    }
}
