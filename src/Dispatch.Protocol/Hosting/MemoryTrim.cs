using Serilog;

namespace Dispatch.Protocol.Hosting;

/// <summary>
/// Gives memory back after a surge of connections (a flood, a spike). .NET's GC collects when a process allocates, so a
/// dispatcher or worker left quiet after ten thousand connections ended kept their heap (state machines, rented buffers
/// the pools did not keep, Kestrel's per-connection objects) as RSS indefinitely. A timer looks at the open connections;
/// once they have fallen back to within a quarter of a surge of at least <see cref="MinimumSurge"/> over the level the
/// surge started from, one full, compacting, aggressive collection returns the free heap to the system, and the level is
/// taken again from there.
/// </summary>
public sealed class MemoryTrim : IDisposable
{
    /// <summary>Connections over the starting level before a fall back counts as the end of a surge.</summary>
    public const int MinimumSurge = 256;

    private readonly Func<int> _open;
    private readonly ILogger _log;
    private readonly Func<int>? _peakSince;
    private readonly Timer _timer;
    private readonly Lock _gate = new();
    // A process starts with no connection: a surge already under way at the first look (a flood that began with the
    // process) counts from 0, not from where it was first seen.
    private int _floor;
    private int _peak;

    /// <param name="open">The connections open now.</param>
    /// <param name="period">How often to look (a trim can follow the end of a surge by up to this much).</param>
    /// <param name="peak">
    /// Optional: the most connections open at once since the last call (and from then on, the count now), so that a
    /// surge shorter than <paramref name="period"/> is not missed between two looks.
    /// </param>
    public MemoryTrim(Func<int> open, TimeSpan period, ILogger log, Func<int>? peak = null)
    {
        _open = open;
        _peakSince = peak;
        _log = log;
        _timer = new Timer(_ => Check(), null, period, period);
    }

    /// <summary>Trims collected so far (for tests and status).</summary>
    public int Trims { get; private set; }

    /// <summary>Looks once: a trim if a surge has just ended. Returns whether it trimmed.</summary>
    public bool Check()
    {
        int open, peak, floor;
        lock (_gate)
        {
            open = _open();
            _peak = Math.Max(_peak, Math.Max(open, _peakSince?.Invoke() ?? 0));
            peak = _peak;
            floor = _floor;
            if (peak - floor < MinimumSurge || open > floor + ((peak - floor) / 4))
            {
                // No surge to end: a lower level is where the next one starts from.
                if (open < _floor)
                    _floor = _peak = open;
                return false;
            }

            _floor = _peak = open;
            Trims++;
        }

        var before = GC.GetTotalMemory(forceFullCollection: false);
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        var after = GC.GetTotalMemory(forceFullCollection: false);
        _log.Information(
            "Connections fell from {Peak} to {Open}: memory trimmed, GC heap {Before} -> {After} MiB",
            peak, open, before >> 20, after >> 20);
        return true;
    }

    public void Dispose() => _timer.Dispose();
}
