namespace Dispatch.Master.Config;

internal sealed record DispatcherConfig(uint Uid, uint Gid, TimeSpan HeaderTimeout, int MaxRequestHead, TimeSpan WorkerWait, ulong NoFile, TimeSpan HandshakeTimeout, string Engine, int Processes, TimeSpan StopGrace)
{
    /// <summary>dispatcher:sendTimeout: a write of the dispatcher's pumps that makes no progress for this long closes the connection.</summary>
    public TimeSpan SendTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>dispatcher:limits: connections per client address and in all.</summary>
    public Dispatch.Wire.Payloads.ClientLimitSettings ClientLimits { get; init; } = Dispatch.Wire.Payloads.ClientLimitSettings.Default;
}
