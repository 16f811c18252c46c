using System.Buffers;
using System.Collections.Concurrent;

namespace Dispatch.Platform.Hosting;

/// <summary>
/// The buffers a connection holds while it waits (a dispatcher's prelude and handshake records): ordinary arrays of 4
/// to 64 KiB (powers of two, and <see cref="RecordLength"/>), kept for the next connection however many come back,
/// until <see cref="Trim"/> lets them go (<see cref="MemoryTrim"/>, once a surge has ended or the process is quiet).
/// </summary>
/// <remarks>
/// <para><see cref="ArrayPool{T}.Shared"/> keeps 16 arrays of a size per core (<c>Spawner.PooledArrays</c>): with 256 TLS
/// handshakes in flight, each holding three or four buffers of 16 to 32 KiB while its client is slow, nearly every rent
/// was a new array of the GC's young generation, held through a collection or two and copied each time, then dropped at
/// its return: a dispatcher in a TLS flood made up to 19 collections a second, more than its handshakes' own
/// allocation (25 to 36 KiB each) explains (docs/floods.md, "The transport's buffers off the GC's young generation").
/// An array here is allocated once and copied at most twice (to gen 2, where it stays while kept).</para>
/// <para>Not on the pinned object heap, as they first were: nothing holds one across a wait (the dispatcher reads and
/// writes them in system calls made when the socket is ready, under <c>fixed</c>), and a pinned array still in use at
/// the trim (a handshake in progress) kept the memory of every array freed below it: a dispatcher stayed 18 to 20 MiB
/// above its baseline after a flood whenever one handshake was in progress as the trim ran, and came back to it when
/// none was. The trim's compacting collection moves these (docs/floods.md, "Memory after a flood: one handshake in
/// progress at the trim").</para>
/// </remarks>
public sealed class KeptArrayPool : ArrayPool<byte>
{
    /// <summary>The smallest array given (a smaller rent gets this).</summary>
    public const int MinimumLength = 4096;

    /// <summary>The largest array kept: a larger rent gets an ordinary array, dropped at its return.</summary>
    public const int MaximumLength = 64 * 1024;

    /// <summary>
    /// The size between 16 and 32 KiB: a TLS record with its expansion and header (16,384 + 2,048 + 5) or a prelude (a
    /// ClientHello of 16 KiB after a PROXY header) fits, where a power of two would be 32 KiB, nearly half of it unused.
    /// A dispatcher's prelude, its handshake's receive buffer and BouncyCastle's record are of this size.
    /// </summary>
    public const int RecordLength = (16 * 1024) + 2560;

    // The sizes kept, ascending: a rent gets the smallest that holds it.
    private static readonly int[] s_lengths = [MinimumLength, 8 * 1024, 16 * 1024, RecordLength, 32 * 1024, MaximumLength];
    private readonly ConcurrentQueue<byte[]>[] _sizes;
    private long _outstanding;
    private long _kept;
    private long _allocated;

    public KeptArrayPool()
    {
        _sizes = new ConcurrentQueue<byte[]>[s_lengths.Length];
        for (var i = 0; i < _sizes.Length; i++)
            _sizes[i] = new ConcurrentQueue<byte[]>();
    }

    /// <summary>The pool of this process.</summary>
    public static KeptArrayPool Instance { get; } = new();

    /// <summary>Arrays rented from the kept sizes and not yet returned.</summary>
    public long Outstanding => Interlocked.Read(ref _outstanding);

    /// <summary>Arrays returned and kept for the next rent.</summary>
    public long Kept => Interlocked.Read(ref _kept);

    /// <summary>Arrays of the kept sizes allocated so far (rents the kept ones did not serve).</summary>
    public long Allocated => Interlocked.Read(ref _allocated);

    public override byte[] Rent(int minimumLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(minimumLength);
        if (minimumLength > MaximumLength)
            return GC.AllocateUninitializedArray<byte>(minimumLength);
        var size = 0;
        while (s_lengths[size] < minimumLength)
            size++;
        var length = s_lengths[size];
        Interlocked.Increment(ref _outstanding);
        if (_sizes[size].TryDequeue(out var array))
        {
            Interlocked.Decrement(ref _kept);
            return array;
        }

        Interlocked.Increment(ref _allocated);
        return GC.AllocateUninitializedArray<byte>(length);
    }

    public override void Return(byte[] array, bool clearArray = false)
    {
        ArgumentNullException.ThrowIfNull(array);
        var length = array.Length;
        var size = Array.IndexOf(s_lengths, length);
        if (size < 0)
        {
            // Not one of ours (a rent larger than the largest size): the GC takes it.
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(length, MaximumLength, nameof(array));
            return;
        }

        if (clearArray)
            Array.Clear(array);
        Interlocked.Decrement(ref _outstanding);
        Interlocked.Increment(ref _kept);
        _sizes[size].Enqueue(array);
    }

    /// <summary>Lets go of every array kept (those rented come back later and are kept again). Returns how many.</summary>
    public int Trim()
    {
        var released = 0;
        foreach (var size in _sizes)
        {
            while (size.TryDequeue(out _))
            {
                Interlocked.Decrement(ref _kept);
                released++;
            }
        }

        return released;
    }
}
