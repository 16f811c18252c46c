using System.Runtime.InteropServices;
using Dispatch.Platform.Interop;
using Dispatch.Wire.Interop;

namespace Dispatch.Platform.Spawn;

/// <summary>
/// The one way Dispatch starts a process: posix_spawn with exactly stdin/stdout on /dev/null, stderr
/// on the given descriptor, the channel on fd 3, every other descriptor closed (closefrom 4, on top
/// of CLOEXEC everywhere), a clean environment, default signal dispositions, an empty signal mask and
/// a process group of its own. Not <c>Process.Start</c>: it leaks every non-CLOEXEC descriptor and
/// cannot take numeric uids.
/// </summary>
public static unsafe class Spawner
{
    public const int ChannelFd = 3;
    private static readonly Lazy<int> DevNull = new(() =>
    {
        var fd = Libc.Open("/dev/null", Libc.O_RDWR | Libc.O_CLOEXEC, 0);
        if (fd < 0)
            SysCallException.ThrowLast("open(/dev/null)");
        return fd;
    });

    /// <summary>The children's log level (the config's log.level), passed in their clean environment.</summary>
    public const string LogLevelVariable = "DISPATCH_LOG_LEVEL";

    /// <summary>
    /// Set by the master from its config before it starts any child; a stage-1 child passes on what it
    /// was given (it rebuilds the clean environment for its own exec).
    /// </summary>
    public static string LogLevel { get; set; } = Environment.GetEnvironmentVariable(LogLevelVariable) ?? "Information";

    /// <summary>
    /// A worker's GC heap hard limit (hexadecimal bytes, as the runtime reads it), set by the master at
    /// spawn from the pool's cgroup <c>memoryMax</c> and passed on by stage 1 to the jailed image.
    /// </summary>
    public const string HeapHardLimitVariable = "DOTNET_GCHeapHardLimit";

    /// <summary>
    /// The GC's gen0 budget of Dispatch's own children: at most 4 MiB (hexadecimal bytes, as the runtime reads them).
    /// Left to itself a workstation GC lets gen0 grow to 128 MiB (32 with a heap hard limit) when little survives, and
    /// keeps that much garbage between two collections: a dispatcher after a burst of handshakes, a worker holding
    /// thousands of idle connections carried tens of MB of it, KiB per connection (docs/operations.md, "Memory per
    /// idle connection"). The cost is more gen0 collections, each of which finds little alive.
    /// </summary>
    public const string Gen0Budget = "DOTNET_GCGen0MaxBudget=400000";

    /// <summary>
    /// The GC's basic region in Dispatch's own children: 256 KiB (hexadecimal bytes) instead of the runtime's 4 MiB, so
    /// that a region of the pinned object heap is 2 MiB instead of 32. The GC gives a region's memory back only whole, and
    /// the pinned blocks of a connection still open keep theirs: after a flood of stalled TLS readers, a worker whose trim
    /// ran while one download continued kept 19 of the flood's 28.6 MiB until it went quiet (docs/floods.md, "The GC's
    /// regions: what a pinned block keeps").
    /// </summary>
    public const string RegionSize = "DOTNET_GCRegionSize=40000";

    /// <summary>
    /// The address range the GC reserves for its heap, in Dispatch's own children without a heap hard limit: 8 GiB
    /// (hexadecimal bytes). The runtime's default is twice the machine's memory (47 GiB here), and it keeps a table entry
    /// per region of that range: with <see cref="RegionSize"/>'s regions the table cost each idle worker 0.7 MB of private
    /// memory (5.0 to 5.7 MB, <c>bench/density.sh</c>, 100 pools), and would cost ten times that on a host with ten
    /// times the memory; with 8 GiB, nothing measurable. It bounds the heap: 8 GiB holds the connections of the
    /// default 65,536 descriptors even as stalled TLS readers (about 60 KB each in a worker). With a heap hard limit
    /// the runtime reserves five times the limit, and this is not given.
    /// </summary>
    public const string RegionRange = "DOTNET_GCRegionRange=200000000";

    /// <summary>
    /// Arrays of one size that <c>ArrayPool&lt;byte&gt;.Shared</c> keeps per partition (one partition per core) in Dispatch's
    /// own children: 16 instead of the runtime's 32. Every buffer of a connection (a prelude, a TLS record, a pipe's
    /// segment) is rented there and given back; after a surge the pool holds as many as it may keep, and gives them up
    /// one at a time, a minute apart, and only at a full collection: after a first TLS flood the dispatcher and the
    /// flooded worker each kept 3 to 4 MiB more for as long as they lived, which no trim reaches (docs/floods.md,
    /// "Memory after a flood: the shared array pool"). 16 halved that at no CPU cost measured; 4 quartered it but cost
    /// keep-alive TLS 100 KiB responses a fifth more CPU. On a 64-core host, 32 per core would be 2,048 arrays of a size.
    /// </summary>
    public const string PooledArrays = "DOTNET_SYSTEM_BUFFERS_SHAREDARRAYPOOL_MAXARRAYSPERPARTITION=16";

    /// <summary>
    /// OpenSSL's configuration file variable: Dispatch's own children (dispatcher, workers) get
    /// <see cref="OpenSslConfigFile"/>, the TLS policy of the engines that run on OpenSSL (suites, groups, versions).
    /// </summary>
    public const string OpenSslConfigVariable = "OPENSSL_CONF";

    /// <summary>dispatch-openssl.cnf beside the binaries (copied there by the build).</summary>
    public static string OpenSslConfigFile => Path.Combine(RuntimePaths.AppDirectory, "dispatch-openssl.cnf");

    /// <summary>
    /// The environment of Dispatch's own children (not of a pool's foreign <c>program</c>): the clean environment, the
    /// OpenSSL policy, the GC's <see cref="Gen0Budget"/> and <see cref="RegionSize"/>, the shared array pool's
    /// <see cref="PooledArrays"/>, and a GC heap hard limit when one is given (else the GC's <see cref="RegionRange"/>).
    /// </summary>
    public static string[] CleanEnvironment(ulong? heapHardLimit)
    {
        string[] own = [.. CleanEnvironment(), $"{OpenSslConfigVariable}={OpenSslConfigFile}", Gen0Budget, RegionSize, PooledArrays];
        return heapHardLimit is { } bytes
            ? [.. own, string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{HeapHardLimitVariable}={bytes:X}")]
            : [.. own, RegionRange];
    }

    /// <summary>The heap hard limit this process was started with (stage 1: the one the master chose), or null.</summary>
    public static ulong? InheritedHeapHardLimit() =>
        ulong.TryParse(Environment.GetEnvironmentVariable(HeapHardLimitVariable), System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out var bytes) ? bytes : null;

    /// <summary>The environment every child gets, and nothing else.</summary>
    public static string[] CleanEnvironment()
    {
        var dotnetRoot = RuntimePaths.DotnetRoot;
        return
        [
            "DOTNET_EnableDiagnostics=0",
            .. dotnetRoot is null ? Array.Empty<string>() : [$"DOTNET_ROOT={dotnetRoot}"],
            "DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1",
            "DOTNET_gcServer=0",
            "LANG=C.UTF-8",
            // No home: the runtime would otherwise look one up in /etc/passwd (denied) for its X509 stores.
            "HOME=/nonexistent",
            "PATH=/usr/bin:/bin",
            $"{LogLevelVariable}={LogLevel}",
        ];
    }

    /// <summary>Starts <paramref name="path"/>; returns its pid. The caller keeps (and closes) its descriptors.</summary>
    public static int Spawn(string path, string[] argv, string[] environment, int channelFd, int stderrFd)
    {
        if (channelFd <= ChannelFd || stderrFd <= ChannelFd)
            throw new ArgumentException("descriptors to pass must be above 3");
        var actions = NativeMemory.AllocZeroed(Libc.PosixSpawnFileActionsSize);
        var attr = NativeMemory.AllocZeroed(Libc.PosixSpawnAttrSize);
        using var strings = new NativeStrings();
        try
        {
            Check(Libc.PosixSpawnFileActionsInit(actions), "posix_spawn_file_actions_init");
            Check(Libc.PosixSpawnFileActionsAddDup2(actions, DevNull.Value, 0), "adddup2(0)");
            Check(Libc.PosixSpawnFileActionsAddDup2(actions, DevNull.Value, 1), "adddup2(1)");
            Check(Libc.PosixSpawnFileActionsAddDup2(actions, stderrFd, 2), "adddup2(2)");
            Check(Libc.PosixSpawnFileActionsAddDup2(actions, channelFd, ChannelFd), "adddup2(3)");
            Check(Libc.PosixSpawnFileActionsAddCloseFrom(actions, ChannelFd + 1), "addclosefrom_np");
            InitCleanAttributes(attr);
            int pid;
            var rc = Libc.PosixSpawn(&pid, strings.Utf8(path), actions, attr, strings.Array(argv), strings.Array(environment));
            if (rc != 0)
                throw new SysCallException($"posix_spawn({path})", rc);
            return pid;
        }
        finally
        {
            Libc.PosixSpawnFileActionsDestroy(actions);
            Libc.PosixSpawnAttrDestroy(attr);
            NativeMemory.Free(actions);
            NativeMemory.Free(attr);
        }
    }

    /// <summary>
    /// Initialises posix_spawn attributes for a clean child: empty signal mask, every signal at its
    /// default disposition, a process group of its own. The caller destroys them.
    /// </summary>
    public static void InitCleanAttributes(void* attr)
    {
        var sigset = stackalloc byte[256];
        Check(Libc.PosixSpawnAttrInit(attr), "posix_spawnattr_init");
        Libc.SigEmptySet(sigset);
        Check(Libc.PosixSpawnAttrSetSigMask(attr, sigset), "posix_spawnattr_setsigmask");
        Libc.SigFillSet(sigset);
        Check(Libc.PosixSpawnAttrSetSigDefault(attr, sigset), "posix_spawnattr_setsigdefault");
        Check(Libc.PosixSpawnAttrSetPGroup(attr, 0), "posix_spawnattr_setpgroup");
        Check(
            Libc.PosixSpawnAttrSetFlags(attr, Libc.POSIX_SPAWN_SETSIGMASK | Libc.POSIX_SPAWN_SETSIGDEF | Libc.POSIX_SPAWN_SETPGROUP),
            "posix_spawnattr_setflags");
    }

    /// <summary>Starts a helper with stdin/stdout/stderr on /dev/null and nothing else (jail probes, later CGI).</summary>
    public static int SpawnPlain(string path, string[] argv, string[] environment)
    {
        var actions = NativeMemory.AllocZeroed(Libc.PosixSpawnFileActionsSize);
        using var strings = new NativeStrings();
        try
        {
            Check(Libc.PosixSpawnFileActionsInit(actions), "posix_spawn_file_actions_init");
            for (var fd = 0; fd < 3; fd++)
                Check(Libc.PosixSpawnFileActionsAddDup2(actions, DevNull.Value, fd), "adddup2");
            Check(Libc.PosixSpawnFileActionsAddCloseFrom(actions, 3), "addclosefrom_np");
            int pid;
            var rc = Libc.PosixSpawn(&pid, strings.Utf8(path), actions, null, strings.Array(argv), strings.Array(environment));
            if (rc != 0)
                throw new SysCallException($"posix_spawn({path})", rc);
            return pid;
        }
        finally
        {
            Libc.PosixSpawnFileActionsDestroy(actions);
            NativeMemory.Free(actions);
        }
    }

    /// <summary>Replaces the current image (used by the jailed stage 1). Returns only on failure.</summary>
    public static void Exec(string path, string[] argv, string[] environment)
    {
        using var strings = new NativeStrings();
        var rc = Libc.Execve(strings.Utf8(path), strings.Array(argv), strings.Array(environment));
        throw new SysCallException($"execve({path})", rc == -1 ? Libc.LastError : rc);
    }

    private static void Check(int rc, string what)
    {
        if (rc != 0)
            throw new SysCallException(what, rc);
    }
}
