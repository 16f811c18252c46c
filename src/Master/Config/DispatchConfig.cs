using System.Net;

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

internal sealed record ListenConfig(IPEndPoint Endpoint, string Protocol, IReadOnlyList<string> TrustedProxies)
{
    public override string ToString() => $"{Protocol} {Endpoint}";
}

internal sealed record DispatcherConfig(uint Uid, uint Gid, TimeSpan HeaderTimeout, int MaxRequestHead, TimeSpan WorkerWait, ulong NoFile, TimeSpan HandshakeTimeout, string Engine, int Processes, TimeSpan StopGrace);

/// <param name="Cgroup">The pool's cgroup limits (memory.max, cpu.max, pids.max of one group for all its workers); null: no group.</param>
/// <param name="LandlockRead">Extra paths the pool's workers may read (beyond the runtime and their roots).</param>
/// <param name="LandlockExec">Paths the pool's workers may execute from (CGI interpreters); null: /usr/bin and /bin when a vhost has CGI.</param>
/// <param name="LandlockWrite">Directories the pool's workers may write beneath (uploads, caches): owned by the pool's uid (see <see cref="LandlockRules"/>).</param>
/// <param name="ConnectTcp">TCP ports the pool's workers may connect to, beyond their proxy upstreams' ports.</param>
internal sealed record PoolConfig(
    string Name,
    uint Uid,
    uint Gid,
    IReadOnlyList<uint> Groups,
    int MaxWorkers,
    ulong NoFile,
    IReadOnlyList<string> LandlockRead,
    IReadOnlyList<string>? LandlockExec,
    int MinSpare,
    TimeSpan IdleTimeout,
    bool OneShot,
    int MaxConnectionsPerWorker,
    IReadOnlyList<Dispatch.Protocol.Wire.ResourceLimit> Limits,
    IReadOnlyList<Dispatch.Protocol.Wire.ModuleSpec> Modules,
    string? Program,
    Dispatch.Protocol.Hosting.CgroupLimits? Cgroup,
    IReadOnlyList<string> LandlockWrite,
    IReadOnlyList<ushort> ConnectTcp,
    ChrootConfig? Chroot = null,
    bool Landlock = true,
    bool TlsHandOff = false);

/// <summary>The pool's chroot (null: none): a private /tmp of <paramref name="TmpBytes"/>, extra paths bound read-only and writable.</summary>
internal sealed record ChrootConfig(ulong TmpBytes, IReadOnlyList<string> ExtraReadOnly, IReadOnlyList<string> Writable)
{
    public override string ToString() => $"tmp {TmpBytes}; ro {string.Join(",", ExtraReadOnly)}; rw {string.Join(",", Writable)}";
}

internal sealed record VhostConfig(
    string Name,
    IReadOnlyList<string> Aliases,
    string Pool,
    string Root,
    bool DirectoryListing,
    IReadOnlyList<string> Index,
    string TlsMode,
    IReadOnlyList<Certificates.LoadedCertificate> Certificates,
    string HttpMode,
    string Engine,
    string? PassthroughCertDir,
    IReadOnlyList<(string UrlPrefix, string Directory)> Cgi,
    TimeSpan CgiTimeout,
    string? AccessLog,
    IReadOnlyList<ProxyMappingConfig> Proxy,
    string? ErrorLog = null)
{
    /// <summary>False when a name of another pool is covered by this vhost's certificate (set after all vhosts are read).</summary>
    public bool OfferH2 { get; init; } = true;

    public IEnumerable<string> Names => [Name, .. Aliases];
}

internal sealed record SecurityConfig(uint MinUid);

/// <summary>Machine-wide limits.</summary>
internal sealed record LimitsConfig(int MaxWorkers);

/// <param name="Format">The file's format: text, or json (one Serilog JSON object per line, properties included).</param>
/// <param name="Console">The console's format: text, json or none.</param>
internal sealed record LogConfig(string Level, string? File, string Format = "text", string Console = "text");

/// <param name="ControlSocket">The root-only Unix socket that <c>Master status</c> (and reload, upgrade) talk to.</param>
/// <param name="MetricsListen">The loopback address the Prometheus endpoint listens on (served by a dispatcher); null: none.</param>
internal sealed record OperationsConfig(string ControlSocket, IPEndPoint? MetricsListen);

/// <summary>Extra paths each jailed process must prove it cannot open, and on how many threads.</summary>
internal sealed record JailProbeConfig(IReadOnlyList<string> Paths, int Threads);

/// <summary>Where the pools' cgroups go (a group path, absolute or relative to the master's own group) and whether limits the machine cannot apply are errors.</summary>
internal sealed record CgroupConfig(string Root, bool Required);
