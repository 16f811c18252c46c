using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Dispatch.Worker.Tls;
using Microsoft.AspNetCore.Connections;

namespace Dispatch.Worker.Http;

/// <summary>
/// The memory of every handed connection's socket transport (its input and output pipes): a whole TLS record's room
/// (more than 4 KiB, at most <see cref="TlsRecordLayer.RecordBuffer"/>) is a block of 16 KiB on the pinned object heap,
/// kept for the next connection until <see cref="Trim"/> lets it go (<see cref="Dispatch.Platform.Hosting.MemoryTrim"/>,
/// once a surge has ended or the worker is quiet); smaller rents (a socket's read, a short response's record) are
/// arrays of the shared array pool, as Kestrel's socket transport takes when given no pool.
/// </summary>
/// <remarks>
/// <para>Why: a client that does not read holds two whole records in the pipe. As arrays of the shared array pool
/// (which keeps 16 of a size per core) they were, during a flood of stalled TLS readers, new arrays of the GC's young
/// generation: nearly all of every gen 0 budget survived its collection and was copied twice (gen 0 to 1 to 2). The
/// flooded worker made 3 to 17 collections a second and paused 60 to 250 ms of each second, and the flooded site's p99
/// was 155 to 173 ms; with blocks off the young generation, 1 to 3 collections, 14 to 49 ms, a p99 of 54 to 82 ms
/// (docs/floods.md, "The transport's buffers off the GC's young generation").</para>
/// <para>Why not Kestrel's own pool (what its socket transport takes through DI: 4 KiB pinned blocks): a whole record
/// does not fit a 4 KiB block, so the pipe gave records arrays of the shared pool again; and that pool lets blocks go
/// a few percent every ten seconds, so a worker kept 90 MB of blocks for minutes after a flood of 2,600 stalled
/// readers. These are given back at once by the trim. Why not every size from here: a stalled reader's records are
/// what it holds, and the small rents are every request's; with them here too, a keep-alive TLS request of 1 KiB cost
/// more CPU in three A/B runs (1.28-1.35x nginx's -> 1.43-1.54x) and less in a fourth, every range overlapping: the
/// narrower change was kept.</para>
/// <para>A block still rented at a trim (a download in progress) keeps the region of the pinned object heap it is in:
/// the GC gives a region back only whole. Hence the small regions of Dispatch's children (<c>Spawner.RegionSize</c>:
/// 2 MiB for this heap, against the runtime's 32, which kept 19 of a flood's 29 MiB; docs/floods.md, "The GC's regions:
/// what a pinned block keeps").</para>
/// </remarks>
internal sealed class TransportBlockPool : MemoryPool<byte>, IMemoryPoolFactory<byte>
{
    /// <summary>The largest rent served by the shared array pool (a pipe's segment, a socket's read).</summary>
    public const int SmallBlock = 4096;

    /// <summary>The block a whole TLS record takes.</summary>
    public const int LargeBlock = TlsRecordLayer.RecordBuffer;

    private readonly ConcurrentQueue<Block> _free = new();
    private long _outstanding;
    private long _kept;
    private long _allocated;

    /// <summary>The one pool of the worker (what <see cref="Trim"/> gives back is the process's).</summary>
    public static TransportBlockPool Instance { get; } = new();

    public override int MaxBufferSize => LargeBlock;

    /// <summary>Blocks rented and not yet given back.</summary>
    public long Outstanding => Interlocked.Read(ref _outstanding);

    /// <summary>Blocks given back and kept for the next rent.</summary>
    public long Kept => Interlocked.Read(ref _kept);

    /// <summary>Blocks allocated so far (rents the kept ones did not serve).</summary>
    public long Allocated => Interlocked.Read(ref _allocated);

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (minBufferSize <= SmallBlock)
            return Shared.Rent(minBufferSize <= 0 ? SmallBlock : minBufferSize);

        // A pipe asks a pool only for sizes up to its MaxBufferSize (larger ones it takes from the shared array pool).
        ArgumentOutOfRangeException.ThrowIfGreaterThan(minBufferSize, LargeBlock);
        Interlocked.Increment(ref _outstanding);
        if (_free.TryDequeue(out var block))
        {
            Interlocked.Decrement(ref _kept);
            block.Lease();
            return block;
        }

        Interlocked.Increment(ref _allocated);
        return new Block(this);
    }

    /// <summary>Lets go of every block kept (those rented come back later and are kept again). Returns how many.</summary>
    public int Trim()
    {
        var released = 0;
        while (_free.TryDequeue(out _))
        {
            Interlocked.Decrement(ref _kept);
            released++;
        }

        return released;
    }

    /// <summary>What the socket transport asks for each of its I/O queues: this one pool.</summary>
    MemoryPool<byte> IMemoryPoolFactory<byte>.Create(MemoryPoolOptions? options) => this;

    private void Return(Block block)
    {
        Interlocked.Decrement(ref _outstanding);
        Interlocked.Increment(ref _kept);
        _free.Enqueue(block);
    }

    // The transport disposes the pools it was given when the server stops; this one is the process's and stays.
    protected override void Dispose(bool disposing)
    {
    }

    private sealed class Block : IMemoryOwner<byte>
    {
        private readonly TransportBlockPool _pool;
        private int _leased = 1;

        public Block(TransportBlockPool pool)
        {
            _pool = pool;
            // Pinned from the start: a socket's I/O pins nothing more, and the GC never moves (copies) it.
            Memory = MemoryMarshal.CreateFromPinnedArray(GC.AllocateUninitializedArray<byte>(LargeBlock, pinned: true), 0, LargeBlock);
        }

        public Memory<byte> Memory { get; }

        public void Lease() => Volatile.Write(ref _leased, 1);

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _leased, 0) == 1)
            {
                _pool.Return(this);
            }
        }
    }
}
