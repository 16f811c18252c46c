namespace Dispatch.Master.Config;

/// <summary>
/// The configuration in force and the version of its route snapshot (1 at start, one more for each accepted reload).
/// Read by everyone; replaced only by <see cref="Reloader"/>.
/// </summary>
internal sealed class RunningConfig(DispatchConfig initial)
{
    private DispatchConfig _current = initial;
    private long _version = 1;

    public DispatchConfig Current => Volatile.Read(ref _current);

    public long Version => Interlocked.Read(ref _version);

    /// <summary>Puts <paramref name="fresh"/> in force under the next version, which it returns.</summary>
    public long Replace(DispatchConfig fresh)
    {
        var version = Interlocked.Increment(ref _version);
        Volatile.Write(ref _current, fresh);
        return version;
    }
}
