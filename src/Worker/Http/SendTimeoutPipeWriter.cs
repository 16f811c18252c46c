using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;

namespace Dispatch.Worker.Http;

/// <summary>
/// The connection's output as Kestrel (or the TLS record layer) writes it, with the time a flush has been waiting:
/// a flush waits while the transport holds more than its pause threshold (64 KiB) unsent, that is while the client
/// does not read. <see cref="SendWatchdog"/> aborts the connection when one waits longer than the send timeout.
/// </summary>
internal sealed class SendTimeoutPipeWriter : PipeWriter
{
    private readonly PipeWriter _inner;
    private long _waitingSince;
    private bool _ended;

    public SendTimeoutPipeWriter(PipeWriter inner, ConnectionContext connection)
    {
        _inner = inner;
        Connection = connection;
    }

    public ConnectionContext Connection { get; }

    /// <summary>
    /// True once a flush found the transport's output ended (completed or failed: the socket no longer takes bytes, the
    /// client is gone). Kestrel's own flushes do not say so (its flusher swallows the transport's error and reports a
    /// flush that completed), so what is written after that would otherwise look sent.
    /// </summary>
    public bool OutputEnded => Volatile.Read(ref _ended) || Direct is { Ended: true };

    /// <summary>
    /// When the pending flush started (Environment.TickCount64), or 0 when none is pending; over a
    /// <see cref="DirectSocketWriter"/>, also its own wait for the socket (a static file's <c>sendfile</c>).
    /// </summary>
    public long WaitingSince
    {
        get
        {
            var own = Volatile.Read(ref _waitingSince);
            return own != 0 ? own : Direct?.WaitingSince ?? 0;
        }
    }

    /// <summary>The connection's output when it is written straight to the socket (plain HTTP/1), else null.</summary>
    public DirectSocketWriter? Direct => _inner as DirectSocketWriter;

    public override bool CanGetUnflushedBytes => _inner.CanGetUnflushedBytes;

    public override long UnflushedBytes => _inner.UnflushedBytes;

    public override void Advance(int bytes) => _inner.Advance(bytes);

    public override Memory<byte> GetMemory(int sizeHint = 0) => _inner.GetMemory(sizeHint);

    public override Span<byte> GetSpan(int sizeHint = 0) => _inner.GetSpan(sizeHint);

    public override void CancelPendingFlush() => _inner.CancelPendingFlush();

    public override void Complete(Exception? exception = null) => _inner.Complete(exception);

    public override ValueTask CompleteAsync(Exception? exception = null) => _inner.CompleteAsync(exception);

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default) => Timed(_inner.FlushAsync(cancellationToken));

    public override ValueTask<FlushResult> WriteAsync(ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default) => Timed(_inner.WriteAsync(source, cancellationToken));

    private ValueTask<FlushResult> Timed(ValueTask<FlushResult> flush)
    {
        if (!flush.IsCompleted)
        {
            return AwaitAsync(flush);
        }

        // Its result taken once (the ValueTask may be backed by the pipe itself), and handed on as a plain value.
        try
        {
            var result = flush.GetAwaiter().GetResult();
            if (result.IsCompleted)
            {
                Volatile.Write(ref _ended, true);
            }

            return new ValueTask<FlushResult>(result);
        }
        catch (Exception e)
        {
            Volatile.Write(ref _ended, true);
            return ValueTask.FromException<FlushResult>(e);
        }
    }

    private async ValueTask<FlushResult> AwaitAsync(ValueTask<FlushResult> flush)
    {
        Volatile.Write(ref _waitingSince, Math.Max(1, Environment.TickCount64));
        try
        {
            var result = await flush.ConfigureAwait(false);
            if (result.IsCompleted)
            {
                Volatile.Write(ref _ended, true);
            }

            return result;
        }
        catch
        {
            Volatile.Write(ref _ended, true);
            throw;
        }
        finally
        {
            Volatile.Write(ref _waitingSince, 0);
        }
    }
}
