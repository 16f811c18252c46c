using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Dispatch.Worker.Tls;
using Microsoft.AspNetCore.Connections;

namespace Dispatch.Worker.Http;

/// <summary>
/// The memory of every handed connection's socket transport (its input and output pipes): blocks of 4 KiB, and of
/// 16 KiB for a whole TLS record (<see cref="TlsRecordLayer.RecordBuffer"/>), allocated on the pinned object heap and
/// kept for the next connection, until <see cref="Trim"/> lets them go (<see cref="Dispatch.Platform.Hosting.MemoryTrim"/>,
/// once a surge has ended or the worker is quiet).
/// </summary>
/// <remarks>
/// <para>Why not what Kestrel's socket transport takes when given no pool (<see cref="MemoryPool{T}.Shared"/>, arrays
/// of the shared array pool, which keeps only a few of each size): during a flood of stalled TLS readers the pipes'
/// buffers were new arrays of the GC's young generation, each held for as long as its client does not read. Nearly all
/// of every gen 0 budget then survived its collection and was copied twice (gen 0 to 1 to 2): the flooded worker made 3
/// to 17 collections a second and paused 60 to 250 ms of each second, and the flooded site's p99 was 155 to 173 ms. With
/// these blocks outside the young generation it made 1 to 3 and paused 14 to 49 ms, and the p99 was 54 ms
/// (docs/floods.md, "The transport's buffers off the GC's young generation").</para>
/// <para>Why not Kestrel's own pool (what its socket transport takes through DI: 4 KiB pinned blocks): a whole record
/// does not fit a 4 KiB block, so the pipe gave records arrays of the shared pool again; and that pool lets blocks go
/// a few percent every ten seconds, so a worker kept 90 MB of blocks for minutes after a flood of 2,600 stalled
/// readers. This one is given back at once by the trim.</para>
/// </remarks>
internal sealed class TransportBlockPool : MemoryPool<byte>, IMemoryPoolFactory<byte>
{
    /// <summary>The block a pipe's segment and a socket's read take.</summary>
    public const int SmallBlock = 4096;

    /// <summary>The block a whole TLS record takes.</summary>
    public const int LargeBlock = TlsRecordLayer.RecordBuffer;

    private readonly ConcurrentQueue<Block> _small = new();
    private readonly ConcurrentQueue<Block> _large = new();
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
        // A pipe asks a pool only for sizes up to its MaxBufferSize (larger ones it takes from the shared array pool).
        ArgumentOutOfRangeException.ThrowIfGreaterThan(minBufferSize, LargeBlock);
        var free = minBufferSize <= SmallBlock ? _small : _large;
        Interlocked.Increment(ref _outstanding);
        if (free.TryDequeue(out var block))
        {
            Interlocked.Decrement(ref _kept);
            block.Lease();
            return block;
        }

        Interlocked.Increment(ref _allocated);
        return new Block(this, free == _small ? SmallBlock : LargeBlock);
    }

    /// <summary>Lets go of every block kept (those rented come back later and are kept again). Returns how many.</summary>
    public int Trim()
    {
        var released = 0;
        foreach (var free in (ReadOnlySpan<ConcurrentQueue<Block>>)[_small, _large])
        {
            while (free.TryDequeue(out _))
            {
                Interlocked.Decrement(ref _kept);
                released++;
            }
        }

        return released;
    }

    /// <summary>What the socket transport asks for each of its I/O queues: this one pool.</summary>
    MemoryPool<byte> IMemoryPoolFactory<byte>.Create(MemoryPoolOptions? options) => this;

    private void Return(Block block)
    {
        Interlocked.Decrement(ref _outstanding);
        Interlocked.Increment(ref _kept);
        (block.Memory.Length == SmallBlock ? _small : _large).Enqueue(block);
    }

    // The transport disposes the pools it was given when the server stops; this one is the process's and stays.
    protected override void Dispose(bool disposing)
    {
    }

    private sealed class Block : IMemoryOwner<byte>
    {
        private readonly TransportBlockPool _pool;
        private int _leased = 1;

        public Block(TransportBlockPool pool, int size)
        {
            _pool = pool;
            // Pinned from the start: a socket's I/O pins nothing more, and the GC never moves (copies) it.
            Memory = MemoryMarshal.CreateFromPinnedArray(GC.AllocateUninitializedArray<byte>(size, pinned: true), 0, size);
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
