using System.IO.Pipelines;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;

namespace Dispatch.Worker.Tests;

/// <summary>
/// A static file's copy whose flush waited for its client goes on on the bulk lane while the thread pool is congested,
/// and stays on the pool otherwise; either way every byte arrives, in order (docs/floods.md, "Where the flooded site's
/// requests wait, and the bulk lane").
/// </summary>
public sealed class BulkLaneTests : IDisposable
{
    private const int FileSize = 1 << 20;
    private readonly TempDir _dir = new();
    private readonly ConfinedFileProvider _provider;
    private readonly byte[] _content = new byte[FileSize];

    public BulkLaneTests()
    {
        new Random(7).NextBytes(_content);
        _dir.Write("root/big.bin", _content);
        _provider = new ConfinedFileProvider(_dir.Combine("root"));
    }

    public void Dispose()
    {
        BulkLane.IsCongested = BulkLane.ThreadPoolCongested;
        _provider.Dispose();
        _dir.Dispose();
    }

    [Fact]
    public async Task A_copy_whose_flush_waits_goes_on_in_the_lane_while_the_pool_is_congested()
    {
        BulkLane.IsCongested = static () => true;
        var (received, threads) = await CopyToSlowReaderAsync();

        Assert.Equal(_content, received);
        Assert.Contains("bulk lane", threads);
        Assert.Equal(0, BulkLane.Failed);
    }

    [Fact]
    public async Task A_copy_stays_on_the_pool_while_it_is_not_congested()
    {
        BulkLane.IsCongested = static () => false;
        var (received, threads) = await CopyToSlowReaderAsync();

        Assert.Equal(_content, received);
        Assert.DoesNotContain("bulk lane", threads);
    }

    /// <summary>Copies the file into a pipe that holds at most 32 KiB, read a little at a time: most flushes wait.</summary>
    private async Task<(byte[] Received, HashSet<string> Threads)> CopyToSlowReaderAsync()
    {
        var file = Assert.IsType<ConfinedFileInfo>(_provider.GetFileInfo("/big.bin"));
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 32 * 1024, resumeWriterThreshold: 16 * 1024, useSynchronizationContext: false));
        var writer = new ThreadRecordingWriter(pipe.Writer);
        var copy = Task.Run(async () =>
        {
            await StaticFileBody.CopyAsync(file, writer, 0, null, CancellationToken.None);
            await pipe.Writer.CompleteAsync();
        });

        using var received = new MemoryStream();
        while (true)
        {
            var result = await pipe.Reader.ReadAsync();
            foreach (var segment in result.Buffer)
            {
                received.Write(segment.Span);
            }

            pipe.Reader.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted)
            {
                break;
            }

            await Task.Yield();
        }

        await copy;
        await pipe.Reader.CompleteAsync();
        return (received.ToArray(), writer.Threads);
    }

    /// <summary>The names of the threads the copy wrote on.</summary>
    private sealed class ThreadRecordingWriter(PipeWriter inner) : PipeWriter
    {
        public HashSet<string> Threads { get; } = [];

        public override void Advance(int bytes)
        {
            lock (Threads)
            {
                Threads.Add(Thread.CurrentThread.Name ?? "pool");
            }

            inner.Advance(bytes);
        }

        public override void CancelPendingFlush() => inner.CancelPendingFlush();

        public override void Complete(Exception? exception = null) => inner.Complete(exception);

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default) => inner.FlushAsync(cancellationToken);

        public override Memory<byte> GetMemory(int sizeHint = 0) => inner.GetMemory(sizeHint);

        public override Span<byte> GetSpan(int sizeHint = 0) => inner.GetSpan(sizeHint);
    }
}
