using System.IO.Pipelines;

namespace Dispatch.Worker.Http;

/// <summary>
/// A connection's input as Kestrel reads it, giving the connection's <see cref="AdmissionTicket"/> back the first time a
/// read has to wait for the client: a connection that is idle (a preconnect, a keep-alive wait, a slow request head) is
/// no longer being set up (<see cref="ConnectionAdmission"/>). Otherwise every call is passed on unchanged.
/// </summary>
internal sealed class AdmissionPipeReader(PipeReader inner, AdmissionTicket ticket) : PipeReader
{
    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        var read = inner.ReadAsync(cancellationToken);
        if (!read.IsCompleted && !ticket.IsReleased)
        {
            ticket.Release();
        }

        return read;
    }

    public override bool TryRead(out ReadResult result) => inner.TryRead(out result);

    public override void AdvanceTo(SequencePosition consumed) => inner.AdvanceTo(consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined) => inner.AdvanceTo(consumed, examined);

    public override void CancelPendingRead() => inner.CancelPendingRead();

    public override void Complete(Exception? exception = null) => inner.Complete(exception);

    public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);
}
