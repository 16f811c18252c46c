
namespace Dispatch.Platform.Hosting;

/// <summary>
/// Connections open now, and the most open at once since the last look: <see cref="MemoryTrim"/> looks every few seconds,
/// and a surge that comes and goes between two looks (eight hundred stalled readers closed within a second) must still
/// count as one.
/// </summary>
public sealed class ConnectionGauge
{
    private int _open;
    private int _peak;

    /// <summary>
    /// Called by <see cref="Enter"/> when it finds no connection open (the first after a quiet spell):
    /// <see cref="MemoryTrim.Wake"/>, whose timer sleeps while the process is quiet.
    /// </summary>
    public Action? Busy { get; set; }

    /// <summary>Connections open now.</summary>
    public int Open => Volatile.Read(ref _open);

    /// <summary>One more connection; returns the count now.</summary>
    public int Enter()
    {
        var open = Interlocked.Increment(ref _open);
        for (var peak = Volatile.Read(ref _peak); open > peak; peak = Volatile.Read(ref _peak))
        {
            if (Interlocked.CompareExchange(ref _peak, open, peak) == peak)
                break;
        }

        if (open == 1)
            Busy?.Invoke();
        return open;
    }

    /// <summary>One connection fewer.</summary>
    public void Leave() => Interlocked.Decrement(ref _open);

    /// <summary>The most connections open at once since the last call; from then on, the count now.</summary>
    public int TakePeak() => Interlocked.Exchange(ref _peak, Volatile.Read(ref _open));
}
