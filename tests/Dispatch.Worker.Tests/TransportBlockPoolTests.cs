using System.Runtime.InteropServices;
using Dispatch.Worker.Http;

namespace Dispatch.Worker.Tests;

/// <summary>
/// The handed connections' transport memory: pinned blocks outside the GC's young generation, kept for the next rent,
/// let go by a trim (docs/floods.md, "The transport's buffers off the GC's young generation").
/// </summary>
public sealed class TransportBlockPoolTests
{
    [Fact]
    public void A_record_s_block_is_pinned_outside_the_young_generation()
    {
        var pool = new TransportBlockPool();
        using var segment = pool.Rent();
        using var small = pool.Rent(100);
        using var record = pool.Rent(TransportBlockPool.SmallBlock + 1);

        Assert.True(segment.Memory.Length >= TransportBlockPool.SmallBlock);
        Assert.True(small.Memory.Length >= 100);
        Assert.Equal(TransportBlockPool.LargeBlock, record.Memory.Length);
        Assert.Equal(1, pool.Outstanding); // the small rents are the shared array pool's
        Assert.Equal(Dispatch.Worker.Tls.TlsRecordLayer.RecordBuffer, TransportBlockPool.LargeBlock);
        Assert.Equal(TransportBlockPool.LargeBlock, pool.MaxBufferSize);

        // Allocated on the pinned object heap: never in gen 0 or 1, so never copied by their collections (an array of
        // the shared array pool, new, is in gen 0).
        Assert.True(MemoryMarshal.TryGetArray<byte>(record.Memory, out var array));
        Assert.Equal(GC.MaxGeneration, GC.GetGeneration(array.Array!));
        Assert.Equal(0, GC.GetGeneration(new byte[TransportBlockPool.LargeBlock]));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Rent(TransportBlockPool.LargeBlock + 1));
    }

    [Fact]
    public void A_block_given_back_serves_the_next_record_until_a_trim_lets_it_go()
    {
        var pool = new TransportBlockPool();
        var record = pool.Rent(TransportBlockPool.LargeBlock);
        var first = record.Memory;
        Assert.Equal(1, pool.Outstanding);

        record.Dispose();
        record.Dispose(); // twice: kept once
        Assert.Equal(0, pool.Outstanding);
        Assert.Equal(1, pool.Kept);

        var second = pool.Rent(TransportBlockPool.SmallBlock + 1);
        Assert.True(second.Memory.Span == first.Span);
        Assert.Equal(1, pool.Allocated);
        var third = pool.Rent(TransportBlockPool.LargeBlock);
        Assert.Equal(2, pool.Allocated);
        second.Dispose();
        third.Dispose();
        Assert.Equal(2, pool.Kept);

        Assert.Equal(2, pool.Trim());
        Assert.Equal(0, pool.Kept);
        using var fresh = pool.Rent(TransportBlockPool.LargeBlock);
        Assert.Equal(3, pool.Allocated);
        Assert.False(fresh.Memory.Span == first.Span);
    }
}
