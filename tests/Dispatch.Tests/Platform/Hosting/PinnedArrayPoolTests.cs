using Dispatch.Platform.Hosting;

namespace Dispatch.Tests.Platform.Hosting;

/// <summary>
/// The pool of a connection's waiting buffers: pinned arrays outside the GC's young generation, kept whatever their
/// number, let go by a trim (docs/floods.md, "The transport's buffers off the GC's young generation").
/// </summary>
public sealed class PinnedArrayPoolTests
{
    [Fact]
    public void Arrays_are_pinned_powers_of_two_from_4_to_64_KiB()
    {
        var pool = new PinnedArrayPool();
        var small = pool.Rent(1);
        var record = pool.Rent(16384 + 2048 + 5);   // a handshake's receive buffer: 32 KiB
        var huge = pool.Rent(PinnedArrayPool.MaximumLength + 1);

        Assert.Equal(PinnedArrayPool.MinimumLength, small.Length);
        Assert.Equal(32 * 1024, record.Length);
        Assert.Equal(PinnedArrayPool.MaximumLength + 1, huge.Length);
        // On the pinned object heap: never in gen 0 or 1, never copied by their collections.
        Assert.Equal(GC.MaxGeneration, GC.GetGeneration(record));
        Assert.Equal(2, pool.Outstanding);

        pool.Return(huge);                            // not kept
        pool.Return(small);
        pool.Return(record);
        Assert.Equal(0, pool.Outstanding);
        Assert.Equal(2, pool.Kept);
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Return(new byte[1000]));
    }

    [Fact]
    public void Every_array_given_back_is_kept_for_the_next_rent_of_its_size_until_a_trim()
    {
        var pool = new PinnedArrayPool();
        // More than the shared array pool keeps of a size (16 per core here): a flood's handshakes in flight.
        var rented = Enumerable.Range(0, 300).Select(_ => pool.Rent(20000)).ToList();
        Assert.Equal(300, pool.Allocated);
        rented[0][0] = 42;
        foreach (var array in rented)
            pool.Return(array, clearArray: true);
        Assert.Equal(300, pool.Kept);

        var again = Enumerable.Range(0, 300).Select(_ => pool.Rent(20000)).ToList();
        Assert.Equal(300, pool.Allocated);           // all served from what was kept
        Assert.All(again, a => Assert.Equal(0, a[0])); // cleared as asked
        foreach (var array in again)
            pool.Return(array);

        Assert.Equal(300, pool.Trim());
        Assert.Equal(0, pool.Kept);
        pool.Rent(20000);
        Assert.Equal(301, pool.Allocated);
    }
}
