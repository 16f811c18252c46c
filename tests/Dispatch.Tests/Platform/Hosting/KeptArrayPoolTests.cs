using Dispatch.Platform.Hosting;

namespace Dispatch.Tests.Platform.Hosting;

/// <summary>
/// The pool of a connection's waiting buffers: arrays kept whatever their number, let go by a trim (docs/floods.md, "The
/// transport's buffers off the GC's young generation"), and moved by its collection (docs/floods.md, "Memory after a
/// flood: one handshake in progress at the trim").
/// </summary>
public sealed class KeptArrayPoolTests
{
    [Fact]
    public void Arrays_are_powers_of_two_from_4_to_64_KiB_or_a_whole_record()
    {
        var pool = new KeptArrayPool();
        var small = pool.Rent(1);
        var record = pool.Rent(16384 + 2048 + 5);   // a handshake's receive buffer: 18.5 KiB, not 32
        var larger = pool.Rent(KeptArrayPool.RecordLength + 1);
        var huge = pool.Rent(KeptArrayPool.MaximumLength + 1);

        Assert.Equal(KeptArrayPool.MinimumLength, small.Length);
        Assert.Equal(KeptArrayPool.RecordLength, record.Length);
        Assert.Equal(18944, record.Length);
        Assert.Equal(32 * 1024, larger.Length);
        Assert.Equal(KeptArrayPool.MaximumLength + 1, huge.Length);
        Assert.Equal(3, pool.Outstanding);

        pool.Return(huge);                            // not kept
        pool.Return(small);
        pool.Return(record);
        pool.Return(larger);
        Assert.Equal(0, pool.Outstanding);
        Assert.Equal(3, pool.Kept);
        Assert.Same(record, pool.Rent(17000));        // a prelude: the record's size, kept
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Return(new byte[1000]));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Return(new byte[20000]));
    }

    [Fact]
    public void Every_array_given_back_is_kept_for_the_next_rent_of_its_size_until_a_trim()
    {
        var pool = new KeptArrayPool();
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

    [Fact]
    public void An_array_still_rented_at_a_trim_does_not_keep_the_memory_of_those_given_back()
    {
        // A flood's handshakes each held arrays of the pool; the last one, still in progress when the trim ran, held an
        // array allocated after all the others. On the pinned object heap, that one array kept committed the memory of
        // all those below it (here 19 MiB of 600 arrays of 32 KiB, as a dispatcher's 18 to 20 MiB after a flood).
        var pool = new KeptArrayPool();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        var before = GC.GetGCMemoryInfo().TotalCommittedBytes;
        var flood = Enumerable.Range(0, 600).Select(_ => pool.Rent(20000)).ToList();
        foreach (var array in flood)
            array.AsSpan().Fill(1);
        var inProgress = pool.Rent(20000);
        inProgress.AsSpan().Fill(1);
        foreach (var array in flood)
            pool.Return(array);
        flood.Clear();

        Assert.Equal(600, pool.Trim());
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        var after = GC.GetGCMemoryInfo().TotalCommittedBytes;

        Assert.True(after - before < 4 << 20, $"the GC heap stayed committed at {after >> 10} KiB after the trim ({before >> 10} KiB before 600 arrays of 32 KiB)");
        Assert.Equal(1, inProgress[^1]);
        GC.KeepAlive(inProgress);
    }
}
