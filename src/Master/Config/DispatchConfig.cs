namespace Dispatch.Master.Config;

/// <summary>A validated configuration. Immutable; compared and diffed on reload.</summary>
internal sealed record DispatchConfig(
    string SourcePath,
    IReadOnlyList<ListenConfig> Listen,
    DispatcherConfig Dispatcher,
    IReadOnlyDictionary<string, PoolConfig> Pools,
    IReadOnlyDictionary<string, VhostConfig> Vhosts,
    string? DefaultVhost,
    SecurityConfig Security,
    LimitsConfig Limits,
    LogConfig Log,
    JailProbeConfig JailProbe,
    CgroupConfig Cgroup,
    OperationsConfig Operations)
{
    /// <summary>The include (conf.d) directory as last read: files, and how many changed.</summary>
    public IncludeDirectory.Summary? Included { get; init; }
}
