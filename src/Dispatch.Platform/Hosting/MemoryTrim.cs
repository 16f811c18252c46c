using Serilog;

namespace Dispatch.Platform.Hosting;

/// <summary>
/// Gives memory back after connections, and leaves an idle process asleep. .NET's GC collects when a process allocates,
/// so a dispatcher or worker left quiet after ten thousand connections kept their heap (state machines, rented buffers
/// the pools did not keep, Kestrel's per-connection objects) as RSS indefinitely; and glibc keeps what OpenSSL and the
/// runtime freed in its malloc arenas. A timer looks at the open connections, and trims (one full, compacting,
/// aggressive collection, then <c>malloc_trim</c>):
/// <list type="bullet">
/// <item>when a surge of at least <see cref="MinimumSurge"/> connections over the level it started from has fallen back
/// to within a quarter of it for a whole period (the most open since the last look, not only now), though connections
/// are still open (a flood ended, the site goes on); or a smaller surge, of at least <see cref="SmallSurge"/>, that left the process's memory (anonymous RSS) above where the last trim left it
/// by as much again (<see cref="GrowthWorthATrim"/>: at least <see cref="MinimumHeapGrowth"/>, at most
/// <see cref="HeapGrowth"/>): two hundred stalled readers of a large file kept 90 MB of a worker while the site's good
/// client went on; a TLS flood too slow to be a <see cref="MinimumSurge"/> kept 24 MiB of a 5 MiB dispatcher;</item>
/// <item>when, after such a trim, the connections it left open have fallen to a quarter (by at least
/// <see cref="SmallSurge"/>): the end of a flood is often seen part way, its last quarter still open, and what those
/// held was otherwise kept (a worker at 140 MiB after 3,584 stalled TLS readers, 52 before; docs/floods.md);</item>
/// <item>when the process goes quiet (no connection open now, none came and went since the last look) after having
/// served any since the last trim (or since it started).</item>
/// </list>
/// A quiet process with nothing left to trim stops the timer: it wakes up no more (a host of a thousand idle workers
/// would otherwise wake five hundred times a second). Its next connection starts the timer again (<see cref="Wake"/>,
/// from <see cref="ConnectionGauge.Busy"/>).
/// </summary>
public sealed class MemoryTrim : IDisposable
{
    /// <summary>Connections over the starting level before a fall back counts as the end of a surge.</summary>
    public const int MinimumSurge = 256;

    /// <summary>Connections over the starting level for a surge that counts when the memory grew by <see cref="GrowthWorthATrim"/>.</summary>
    public const int SmallSurge = 32;

    /// <summary>Growth of the memory (anonymous RSS) since the last trim that always makes a <see cref="SmallSurge"/> worth a trim.</summary>
    public const long HeapGrowth = 32L << 20;

    /// <summary>
    /// Growth below which a <see cref="SmallSurge"/> is never worth a trim: more than a gen 0 budget (4 MiB for Dispatch's
    /// processes), which any process serving a trickle fills and refills.
    /// </summary>
    public const long MinimumHeapGrowth = 8L << 20;

    private readonly Func<int> _open;
    private readonly ILogger _log;
    private readonly Func<int>? _peakSince;
    private readonly Action _trimNative;
    private readonly Func<long> _heapBytes;
    private readonly Func<int>? _release;
    private readonly TimeSpan _period;
    private readonly Timer _timer;
    private readonly Lock _gate = new();
    // A process starts with no connection: a surge already under way at the first look (a flood that began with the
    // process) counts from 0, not from where it was first seen.
    private int _floor;
    private int _peak;
    // Connections (or the start itself, which allocated) since the last trim: a quiet look then trims.
    private bool _busy = true;
    private int _armed = 1;
    private bool _disposed;
    // The GC heap where the last trim (or the start) left it.
    private long _heapBase;
    // Connections open at the last surge trim, while a fall from there to a quarter is worth another: else -1.
    private int _trimmedAt = -1;

    /// <param name="open">The connections open now.</param>
    /// <param name="period">How often to look while the timer runs (a trim can follow the end of a surge by up to this much, the start of a quiet spell by up to twice).</param>
    /// <param name="peak">
    /// Optional: the most connections open at once since the last call (and from then on, the count now), so that a
    /// surge shorter than <paramref name="period"/> is not missed between two looks, nor a connection that came and went.
    /// </param>
    /// <param name="trimNative">What gives the native heap back after the collection: <c>malloc_trim(0)</c> unless given (tests).</param>
    /// <param name="heapBytes">
    /// The memory a surge may have left, now: unless given (tests), the process's anonymous RSS, which holds the GC heap
    /// and also what native code allocated (a dispatcher's TLS handshakes grew it 33 MiB with its GC heap far below
    /// <see cref="HeapGrowth"/>); the GC heap where <c>/proc</c> cannot say.
    /// </param>
    /// <param name="release">
    /// Optional: what lets go of the memory a pool keeps for the next connection, before the collection, returning how
    /// many blocks (the worker's <c>TransportBlockPool</c>: a flood's stalled readers left 90 MB of its blocks).
    /// </param>
    public MemoryTrim(Func<int> open, TimeSpan period, ILogger log, Func<int>? peak = null, Action? trimNative = null, Func<long>? heapBytes = null, Func<int>? release = null)
    {
        _open = open;
        _peakSince = peak;
        _log = log;
        _period = period;
        _trimNative = trimNative ?? TrimMallocArenas;
        _heapBytes = heapBytes ?? AnonymousOrHeapBytes;
        _release = release;
        _heapBase = _heapBytes();
        _timer = new Timer(_ => Check(), null, period, period);
    }

    /// <summary>
    /// How much a <see cref="SmallSurge"/> must have grown the memory since the last trim, which left it at
    /// <paramref name="trimmedTo"/>, to be worth another: as much again (a process that doubled), at least
    /// <see cref="MinimumHeapGrowth"/>, at most <see cref="HeapGrowth"/>.
    /// </summary>
    public static long GrowthWorthATrim(long trimmedTo) => Math.Clamp(trimmedTo, MinimumHeapGrowth, HeapGrowth);

    /// <summary>Trims collected so far (for tests and status).</summary>
    public int Trims { get; private set; }

    /// <summary>Whether the timer runs (false: the process is quiet and trimmed, nothing wakes it until <see cref="Wake"/>).</summary>
    public bool Armed => Volatile.Read(ref _armed) != 0;

    /// <summary>
    /// A connection arrived: starts the timer if it had stopped. Cheap when it runs (one read), so it can be called on
    /// every connection that finds none open.
    /// </summary>
    public void Wake()
    {
        if (Volatile.Read(ref _armed) != 0)
            return;
        lock (_gate)
        {
            if (_armed != 0 || _disposed)
                return;
            Volatile.Write(ref _armed, 1);
            _timer.Change(_period, _period);
        }
    }

    /// <summary>Looks once: a trim if a surge has just ended or the process has gone quiet after connections. Returns whether it trimmed.</summary>
    public bool Check()
    {
        int open, peak;
        bool idle;
        lock (_gate)
        {
            open = _open();
            var since = _peakSince?.Invoke() ?? 0;
            var quiet = open == 0 && since == 0;
            if (!quiet)
                _busy = true;

            // A fall is judged by the most open since the last look, not by the count at this instant: during a
            // flood, a dispatcher's handshakes in flight come and go many times a second, and a look that fell in a
            // lull took the flood for over and trimmed (a full, blocking collection) every few seconds while it went on.
            var recent = Math.Max(open, since);
            _peak = Math.Max(_peak, recent);
            peak = _peak;
            var floor = _floor;
            var surge = peak - floor;
            if (_trimmedAt >= 0 && recent <= _trimmedAt / 4 && _trimmedAt - recent >= SmallSurge)
            {
                // What was still open at the last trim has mostly closed since.
                idle = false;
                _floor = _peak = open;
                _trimmedAt = open > SmallSurge ? open : -1;
                _busy = !quiet;
            }
            else if ((surge >= MinimumSurge || (surge >= SmallSurge && _heapBytes() - _heapBase >= GrowthWorthATrim(_heapBase))) && recent <= floor + (surge / 4))
            {
                // A surge has ended.
                idle = false;
                _floor = _peak = open;
                _trimmedAt = open > SmallSurge ? open : -1;
                _busy = !quiet;
            }
            else if (quiet)
            {
                // Quiet: trim what the connections since the last trim left, then sleep until the next connection.
                // One that arrives while this look stops the timer finds it still running (Wake returns at once): so
                // look at the count again once it is stopped.
                _floor = _peak = 0;
                _trimmedAt = -1;
                idle = _busy;
                _busy = false;
                Volatile.Write(ref _armed, 0);
                if (!_disposed)
                    _timer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                if (_open() > 0 && !_disposed)
                {
                    Volatile.Write(ref _armed, 1);
                    _timer.Change(_period, _period);
                }

                if (!idle)
                    return false;
            }
            else
            {
                // No surge to end: a lower level is where the next one starts from.
                if (recent < _floor)
                    _floor = _peak = recent;
                return false;
            }

            Trims++;
        }

        Trim(idle, peak, open);
        return true;
    }

    private void Trim(bool idle, int peak, int open)
    {
        var before = GC.GetTotalMemory(forceFullCollection: false);
        var anonBefore = AnonymousRss();
        var released = _release?.Invoke() ?? 0;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        var after = GC.GetTotalMemory(forceFullCollection: false);
        var anonCollected = AnonymousRss();
        _trimNative();
        var anonAfter = AnonymousRss();
        lock (_gate)
            _heapBase = _heapBytes();
        if (idle)
        {
            // A quiet spell after a few connections is common (a site with a request a minute): Debug, not Information.
            _log.Debug(
                "Quiet: memory trimmed, {Released} pooled blocks let go, GC heap {Before} -> {After} MiB, anonymous RSS {AnonBefore} -> {AnonCollected} (collected) -> {AnonAfter} (malloc_trim) MiB",
                released, before >> 20, after >> 20, anonBefore >> 10, anonCollected >> 10, anonAfter >> 10);
        }
        else
        {
            _log.Information(
                "Connections fell from {Peak} to {Open}: memory trimmed, {Released} pooled blocks let go, GC heap {Before} -> {After} MiB, anonymous RSS {AnonBefore} -> {AnonCollected} (collected) -> {AnonAfter} (malloc_trim) MiB",
                peak, open, released, before >> 20, after >> 20, anonBefore >> 10, anonCollected >> 10, anonAfter >> 10);
        }
    }

    /// <summary>What the trim watches by default: this process's anonymous RSS in bytes, or its GC heap where /proc cannot say.</summary>
    public static long AnonymousOrHeapBytes()
    {
        var anon = AnonymousRss();
        return anon > 0 ? anon << 10 : GC.GetTotalMemory(forceFullCollection: false);
    }

    /// <summary>RssAnon of this process in KiB (0 when /proc cannot say: a chroot without /proc).</summary>
    private static long AnonymousRss()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("RssAnon:", StringComparison.Ordinal))
                    return long.Parse(line.AsSpan(8).Trim().TrimEnd("kB").Trim(), System.Globalization.CultureInfo.InvariantCulture);
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return 0;
    }

    /// <summary>glibc's free memory in every malloc arena (OpenSSL's, the runtime's threads') back to the system.</summary>
    private static void TrimMallocArenas() => Interop.Libc.MallocTrim(0);

    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
            _timer.Dispose();
        }
    }
}
