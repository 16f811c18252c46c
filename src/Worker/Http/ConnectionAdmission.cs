using System.Diagnostics;

namespace Dispatch.Worker.Http;

/// <summary>
/// How many handed connections a worker sets up at once: Kestrel takes a connection from its queue only while fewer than
/// <see cref="Limit"/> are between being taken and their first request (or their first wait for the client). The
/// others wait in the listeners' queues, taken by client address in turn (<see cref="AddressFairQueue"/>), so that a
/// site's good client is not served after a flood's thousands of connections from one address.
/// </summary>
/// <remarks>
/// <para>Why: without it, every connection the dispatcher hands over goes to the thread pool at once. During a flood of
/// 5,000 stalled readers (docs/floods.md) the pool's queue was hundreds of items deep, and the flooded site's good
/// client waited behind them; with four set up at a time, its connection waits behind one flood connection in the
/// queue, and the pool's queue stays a few items deep.</para>
/// <para>A connection gives its place back (<see cref="AdmissionTicket.Release"/>) at the first of: its first request's
/// handler starts (<see cref="RequestHandler"/>; a stalled reader's request then goes on to <c>sendfile</c> and its
/// wait on the same thread), a read of it waits for the client (<see cref="AdmissionPipeReader"/>: an idle connection, a
/// slow request head), it ends. A place held longer than <see cref="Hold"/> (a setup that stalls for another reason)
/// is taken back, so that admission never stops.</para>
/// </remarks>
public sealed class ConnectionAdmission : IDisposable
{
    /// <summary>How long a connection may hold its place before it is taken back.</summary>
    public static readonly TimeSpan DefaultHold = TimeSpan.FromMilliseconds(100);

    private readonly SemaphoreSlim _free;
    private readonly Lock _lock = new();
    private readonly LinkedList<AdmissionTicket> _held = new();
    private long _reclaimed;

    public ConnectionAdmission(int limit, TimeSpan hold)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(limit, 1);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(hold, TimeSpan.Zero);
        Limit = limit;
        Hold = hold;
        _free = new SemaphoreSlim(limit, limit);
    }

    /// <summary>Two per processor, at least four: enough to keep every core busy with setups, no more.</summary>
    public static int DefaultLimit => Math.Max(4, 2 * Environment.ProcessorCount);

    public int Limit { get; }

    public TimeSpan Hold { get; }

    /// <summary>Places held now.</summary>
    public int Held
    {
        get
        {
            lock (_lock)
            {
                return _held.Count;
            }
        }
    }

    /// <summary>Places taken back from connections that held them longer than <see cref="Hold"/>.</summary>
    public long Reclaimed => Interlocked.Read(ref _reclaimed);

    /// <summary>Waits for a free place, taking back the ones held too long meanwhile.</summary>
    public async ValueTask<AdmissionTicket> EnterAsync(CancellationToken cancellationToken)
    {
        while (!await _free.WaitAsync(UntilOldestExpires(), cancellationToken).ConfigureAwait(false))
        {
            ReclaimExpired();
        }

        var ticket = new AdmissionTicket(this, Stopwatch.GetTimestamp());
        lock (_lock)
        {
            ticket.Node = _held.AddLast(ticket);
        }

        return ticket;
    }

    public void Dispose() => _free.Dispose();

    internal void Return(AdmissionTicket ticket)
    {
        lock (_lock)
        {
            if (ticket.Node is { List: not null } node)
            {
                _held.Remove(node);
            }

            ticket.Node = null; // the connection keeps its ticket for its life, not the node
        }

        try
        {
            _free.Release();
        }
        catch (ObjectDisposedException)
        {
            // Given back after the server stopped (a connection's end, late): nothing waits for a place any more.
        }
    }

    // The oldest place expires first (places are held in the order they were given).
    private TimeSpan UntilOldestExpires()
    {
        lock (_lock)
        {
            if (_held.First is not { } oldest)
            {
                return Hold; // a place between its semaphore and the list: looked at again soon
            }

            var left = Hold - Stopwatch.GetElapsedTime(oldest.Value.Since);
            return left > TimeSpan.Zero ? left + TimeSpan.FromMilliseconds(1) : TimeSpan.Zero;
        }
    }

    private void ReclaimExpired()
    {
        List<AdmissionTicket>? expired = null;
        lock (_lock)
        {
            for (var node = _held.First; node is not null && Stopwatch.GetElapsedTime(node.Value.Since) >= Hold; node = node.Next)
            {
                (expired ??= []).Add(node.Value);
            }
        }

        if (expired is null)
        {
            return;
        }

        foreach (var ticket in expired)
        {
            if (ticket.Release())
            {
                Interlocked.Increment(ref _reclaimed);
            }
        }
    }
}
