using System.Collections.Concurrent;
using System.Runtime.CompilerServices;

namespace Dispatch.Worker.Http;

/// <summary>
/// Where a static file's copy (<see cref="StaticFileBody"/>: over TLS, HTTP/2 or compressed, every one not sent by
/// <c>sendfile</c>) goes on after a flush that waited for its client, while the thread pool is congested
/// (<see cref="IsCongested"/>): threads of their own, so that the copies' next records are not queued ahead of the work
/// of new connections and short requests. The pool's queue is first in, first out; during a flood of stalled TLS
/// readers it was 100 to 340 items deep in most seconds, and each step of a new connection's setup waited behind the
/// flood's work, its copies resuming as their clients read a little among it. With those steps here, the flooded
/// site's p99 fell by a quarter to a third (docs/floods.md, "Where the flooded site's requests wait, and the bulk lane").
/// </summary>
/// <remarks>
/// A copy moves here only when its flush waited (the client had not taken what was sent) and the pool is congested; a
/// download in an otherwise quiet worker never does. The threads start at the first such copy (an idle worker has
/// none). A copy that resumes here reads its next chunk, writes it (the record layer encrypts it on this thread) and
/// flushes; when that flush waits, the thread takes the next copy. Each copy has at most one step queued here, so the
/// queue is no longer than the copies in progress.
/// </remarks>
internal static class BulkLane
{
    /// <summary>Items queued on the thread pool above which it is congested.</summary>
    internal const int CongestedAbove = 4;

    private static readonly ConcurrentQueue<Action> s_queue = new();
    private static readonly SemaphoreSlim s_queued = new(0);
    private static int s_started;
    private static long s_continued;
    private static long s_failed;

    /// <summary>Whether a copy whose flush waited goes on here (tests replace it; restore <see cref="ThreadPoolCongested"/>).</summary>
    internal static Func<bool> IsCongested { get; set; } = ThreadPoolCongested;

    /// <summary>Threads of the lane: half the processors, at least one.</summary>
    internal static int Threads => Math.Max(1, Environment.ProcessorCount / 2);

    /// <summary>Steps of copies that went on here since the start.</summary>
    internal static long Continued => Interlocked.Read(ref s_continued);

    /// <summary>Steps that threw out of their continuation (an async method's continuation does not; tests).</summary>
    internal static long Failed => Interlocked.Read(ref s_failed);

    internal static bool ThreadPoolCongested() => ThreadPool.PendingWorkItemCount > CongestedAbove;

    /// <summary><c>await BulkLane.Yield()</c>: the rest of the method runs on a thread of the lane.</summary>
    internal static Awaitable Yield() => default;

    private static void Queue(Action continuation)
    {
        if (Volatile.Read(ref s_started) == 0 && Interlocked.Exchange(ref s_started, 1) == 0)
        {
            for (var i = 0; i < Threads; i++)
            {
                new Thread(Run) { IsBackground = true, Name = "bulk lane" }.Start();
            }
        }

        s_queue.Enqueue(continuation);
        s_queued.Release();
    }

    private static void Run()
    {
        while (true)
        {
            s_queued.Wait();
            if (!s_queue.TryDequeue(out var next))
            {
                continue;
            }

            Interlocked.Increment(ref s_continued);
            try
            {
                next();
            }
#pragma warning disable CA1031 // The lane outlives any one copy: a continuation that throws must not end the thread.
            catch (Exception)
#pragma warning restore CA1031
            {
                Interlocked.Increment(ref s_failed);
            }
        }
    }

    internal readonly struct Awaitable
    {
        public Awaiter GetAwaiter() => default;
    }

    internal readonly struct Awaiter : ICriticalNotifyCompletion
    {
        public bool IsCompleted => false;

        public void GetResult()
        {
        }

        public void OnCompleted(Action continuation)
        {
            var context = ExecutionContext.Capture();
            Queue(context is null ? continuation : () => ExecutionContext.Run(context, static state => ((Action)state!)(), continuation));
        }

        public void UnsafeOnCompleted(Action continuation) => Queue(continuation);
    }
}
