using System.Buffers;

namespace Dispatch.Worker.Tls;

/// <summary>
/// The memory of the TLS record layer: the plaintext pipes' segments and the scratch space for records that straddle
/// the transport's segments, all from <see cref="ArrayPool{T}.Shared"/>, with a count of what is out so that tests
/// (and a curious operator) can see that an idle connection holds none of it.
/// </summary>
internal sealed class TlsBufferPool : MemoryPool<byte>
{
    private static long s_outstanding;
    private static long s_rented;

    private TlsBufferPool()
    {
    }

    /// <summary>The one instance (the count is process-wide).</summary>
    public static TlsBufferPool Instance { get; } = new();

    /// <summary>Buffers rented and not yet returned, over every connection of the process.</summary>
    public static long Outstanding => Interlocked.Read(ref s_outstanding);

    /// <summary>Buffers rented so far (returned or not), over every connection of the process.</summary>
    public static long Rented => Interlocked.Read(ref s_rented);

    /// <summary>Larger than any record, so that a pipe asks this pool even for a whole record's room.</summary>
    public override int MaxBufferSize => 1 << 20;

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1) =>
        new Owner(RentArray(minBufferSize <= 0 ? 4096 : minBufferSize));

    /// <summary>An array of at least <paramref name="length"/> bytes, counted until <see cref="ReturnArray"/>.</summary>
    public static byte[] RentArray(int length)
    {
        var array = ArrayPool<byte>.Shared.Rent(length);
        Interlocked.Increment(ref s_outstanding);
        Interlocked.Increment(ref s_rented);
        return array;
    }

    public static void ReturnArray(byte[] array)
    {
        Interlocked.Decrement(ref s_outstanding);
        ArrayPool<byte>.Shared.Return(array);
    }

    protected override void Dispose(bool disposing)
    {
    }

    private sealed class Owner(byte[] array) : IMemoryOwner<byte>
    {
        private byte[]? _array = array;

        public Memory<byte> Memory => _array ?? throw new ObjectDisposedException(nameof(Owner));

        public void Dispose()
        {
            var array = Interlocked.Exchange(ref _array, null);
            if (array is not null)
            {
                ReturnArray(array);
            }
        }
    }
}
