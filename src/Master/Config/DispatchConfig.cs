using System.Net;
using Dispatch.Wire.Payloads;

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

internal sealed record ListenConfig(IPEndPoint Endpoint, string Protocol, ValueList<string> TrustedProxies)
{
    public override string ToString() => $"{Protocol} {Endpoint}";
}

internal sealed record DispatcherConfig(uint Uid, uint Gid, TimeSpan HeaderTimeout, int MaxRequestHead, TimeSpan WorkerWait, ulong NoFile, TimeSpan HandshakeTimeout, string Engine, int Processes, TimeSpan StopGrace)
{
    /// <summary>dispatcher:sendTimeout: a write of the dispatcher's pumps that makes no progress for this long closes the connection.</summary>
    public TimeSpan SendTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>dispatcher:limits: connections per client address and in all.</summary>
    public Dispatch.Wire.Payloads.ClientLimitSettings ClientLimits { get; init; } = Dispatch.Wire.Payloads.ClientLimitSettings.Default;
}

/// <param name="Cgroup">The pool's cgroup limits (memory.max, cpu.max, pids.max of one group for all its workers); null: no group.</param>
/// <param name="LandlockRead">Extra paths the pool's workers may read (beyond the runtime and their roots).</param>
/// <param name="LandlockExec">Paths the pool's workers may execute from (CGI interpreters); null: /usr/bin and /bin when a vhost has CGI.</param>
/// <param name="LandlockWrite">Directories the pool's workers may write beneath (uploads, caches): owned by the pool's uid (see <see cref="LandlockRules"/>).</param>
/// <param name="ConnectTcp">TCP ports the pool's workers may connect to, beyond their proxy upstreams' ports.</param>
internal sealed record PoolConfig(
    string Name,
    uint Uid,
    uint Gid,
    ValueList<uint> Groups,
    int MaxWorkers,
    ValueList<string> LandlockRead,
    ValueList<string>? LandlockExec,
    int MinSpare,
    TimeSpan IdleTimeout,
    bool OneShot,
    int MaxConnectionsPerWorker,
    ValueList<Dispatch.Wire.ResourceLimit> Limits,
    ValueList<Dispatch.Wire.ModuleSpec> Modules,
    string? Program,
    Dispatch.Platform.Cgroups.CgroupLimits? Cgroup,
    ValueList<string> LandlockWrite,
    ValueList<ushort> ConnectTcp,
    ChrootConfig? Chroot = null,
    bool Landlock = true,
    bool TlsHandOff = false)
{
    /// <summary>The pool's <c>timeouts</c>: its workers' send, keep-alive and header timeouts and minimum data rates.</summary>
    public Dispatch.Wire.Payloads.WorkerTimeouts Timeouts { get; init; } = Dispatch.Wire.Payloads.WorkerTimeouts.Default;
}

/// <summary>The pool's chroot (null: none): a private /tmp of <paramref name="TmpBytes"/>, extra paths bound read-only and writable.</summary>
internal sealed record ChrootConfig(ulong TmpBytes, ValueList<string> ExtraReadOnly, ValueList<string> Writable);

internal sealed record VhostConfig(
    string Name,
    ValueList<string> Aliases,
    string Pool,
    string Root,
    bool DirectoryListing,
    ValueList<string> Index,
    string TlsMode,
    ValueList<Certificates.LoadedCertificate> Certificates,
    string HttpMode,
    string Engine,
    string? PassthroughCertDir,
    ValueList<CgiRoute> Cgi,
    TimeSpan CgiTimeout,
    string? AccessLog,
    ValueList<ProxyRoute> Proxy,
    string? ErrorLog = null,
    Dispatch.Wire.Payloads.VhostWeb? Web = null)
{
    /// <summary>The vhost's FastCGI (PHP) application; null: none.</summary>
    public FastCgiConfig? FastCgi { get; init; }

    /// <summary>Front-controller routing (<c>tryFiles</c>, as nginx's try_files): empty when not configured.</summary>
    public ValueList<string> TryFiles { get; init; } = [];

    /// <summary>False when a name of another pool is covered by this vhost's certificate (set after all vhosts are read).</summary>
    public bool OfferH2 { get; init; } = true;

    public IEnumerable<string> Names => [Name, .. Aliases];

    /// <summary>Set for <c>"identity": "authenticated"</c>: the logins (from the credentials file) and their pools; <see cref="Pool"/> is then empty.</summary>
    public IdentityConfig? Identity { get; init; }

    /// <summary>True when <paramref name="pool"/>'s workers serve this vhost: its own pool, or a login's pool of an identity vhost.</summary>
    public bool ServedBy(string pool) => Identity is { } identity ? identity.Users.Any(u => u.Pool == pool) : Pool == pool;
}

/// <summary>An identity vhost's credentials: the file, the realm, each enabled login's hash and pool, the limits on failed logins.</summary>
internal sealed record IdentityConfig(string CredentialsPath, string Realm, ValueList<IdentityLogin> Users, int FailuresPerAddress, int FailuresPerLogin, TimeSpan FailureWindow);

/// <summary>A login of an identity vhost, its hash and the pool that serves it.</summary>
internal sealed record IdentityLogin(string Login, string Hash, string Pool);

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
internal sealed record JailProbeConfig(ValueList<string> Paths, int Threads);

/// <summary>Where the pools' cgroups go (a group path, absolute or relative to the master's own group) and whether limits the machine cannot apply are errors.</summary>
internal sealed record CgroupConfig(string Root, bool Required);
