namespace Dispatch.Worker.Http;

/// <summary>A connection's place in the <see cref="ConnectionAdmission"/>; given back once, by whichever comes first.</summary>
public sealed class AdmissionTicket
{
    private readonly ConnectionAdmission _owner;
    private int _released;

    internal AdmissionTicket(ConnectionAdmission owner, long since)
    {
        _owner = owner;
        Since = since;
    }

    /// <summary>When the place was given (Stopwatch timestamp).</summary>
    public long Since { get; }

    public bool IsReleased => Volatile.Read(ref _released) != 0;

    internal LinkedListNode<AdmissionTicket>? Node { get; set; }

    /// <summary>Gives the place back; true the first time only.</summary>
    public bool Release()
    {
        // Every request of a connection asks (RequestHandler): after the first, a plain read answers.
        if (Volatile.Read(ref _released) != 0 || Interlocked.Exchange(ref _released, 1) != 0)
        {
            return false;
        }

        _owner.Return(this);
        return true;
    }
}
