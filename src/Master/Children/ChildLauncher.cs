using Dispatch.Platform.Hosting;
using Dispatch.Platform.Interop;
using Dispatch.Platform.Spawn;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Serilog;

namespace Dispatch.Master.Children;

/// <summary>
/// Starts a jailed child: spawn (stage 1, root) → JailSpec → jailed exec → Hello, checked against
/// the pid and role we started. What follows (setup, proof, ready) is role-specific.
/// </summary>
internal sealed class ChildLauncher
{
    private static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(30);
    private readonly Reaper _reaper;
    private readonly ILogger _log;

    public ChildLauncher(Reaper reaper, ILogger log)
    {
        _reaper = reaper;
        _log = log;
    }

    public static string ExecutablePath(ProcessRole role) =>
        Path.Combine(RuntimePaths.AppDirectory, role == ProcessRole.Dispatcher ? "TlsDispatcher" : "Worker");

    /// <summary>
    /// The paths every jailed child may read: the runtime, our binaries, the system libraries, and what
    /// the runtime reads to size itself (CoreCLR fails to start without /proc/meminfo and its own
    /// /proc/self/maps; CPU and cgroup limits size the thread pool and GC). "/proc/self" is resolved
    /// by the child, so it names the child's own /proc entry.
    /// </summary>
    public static string[] RuntimeReadPaths() =>
        [
            .. RuntimePaths.CodePaths, "/usr/lib", "/lib", "/lib64", "/usr/lib64", "/dev/urandom",
            "/proc/self", "/proc/meminfo", "/proc/stat", "/sys/devices/system/cpu", "/sys/devices/system/node", "/sys/fs/cgroup",
            // Public CA certificates: SslStream builds the chain it sends (and OpenSSL looks there); no private keys live here.
            "/etc/ssl/certs",
        ];

    /// <summary>
    /// A child's whole start, for either role: spawn, hello, the role's setup (<paramref name="setup"/>, which sends
    /// it what it needs), its proof of the jail (checked: <see cref="CheckProof"/>), then Ready. A child that fails
    /// any step is killed, and the failure thrown (<see cref="ChildStartException"/> for the child's own failures).
    /// </summary>
    /// <param name="mustBeAbsent">A chroot's probes that must not exist at all in the child's view.</param>
    /// <param name="heapHardLimit">A GC heap hard limit for the child (a worker of a pool with a memory limit), or null.</param>
    public async Task<(ChildProcess Child, Ready Ready)> LaunchAsync(
        JailSpec spec, string name, Action<ChildProcess> setup, IReadOnlyCollection<string>? mustBeAbsent, CancellationToken cancellationToken, ulong? heapHardLimit = null)
    {
        var child = await StartAsync(spec, name, cancellationToken, heapHardLimit).ConfigureAwait(false);
        try
        {
            setup(child);
            CheckProof(child, await ExpectAsync<JailProof>(child, cancellationToken).ConfigureAwait(false), mustBeAbsent);
            _log.Debug(StartupTrace.Template + " for {Child}", "proof-checked", StartupTrace.NowMs, child);
            var ready = await ExpectAsync<Ready>(child, cancellationToken).ConfigureAwait(false);
            return (child, ready);
        }
        catch
        {
            child.Kill();
            child.Dispose();
            throw;
        }
    }

    private async Task<ChildProcess> StartAsync(JailSpec spec, string name, CancellationToken cancellationToken, ulong? heapHardLimit = null)
    {
        var exe = ExecutablePath(spec.Role);
        var channel = IpcChannel.CreatePair($"{spec.Role} ({name})", out var childFd);
        int errRead = -1, errWrite = -1;
        int pid;
        try
        {
            (errRead, errWrite) = IpcChannel.RawPair(Libc.SOCK_STREAM);
            _log.Debug(StartupTrace.Template + " for {Role} ({Name})", "spawn", StartupTrace.NowMs, spec.Role, name);
            pid = Spawner.Spawn(exe, [Path.GetFileName(exe), "--stage1"], Spawner.CleanEnvironment(heapHardLimit), childFd, errWrite);
        }
        catch
        {
            channel.Dispose();
            if (errRead >= 0)
                Libc.Close(errRead);
            throw;
        }
        finally
        {
            Libc.Close(childFd);
            if (errWrite >= 0)
                Libc.Close(errWrite);
        }

        var child = new ChildProcess(spec.Role, name, pid, spec.Uid, channel);
        channel.Peer = child.ToString();
        _reaper.Track(child);
        StderrPump.Start(errRead, spec.Role, name, () => pid, _log);
        try
        {
            channel.Send(spec);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(HandshakeTimeout);
            var receive = channel.ReceiveAsync(timeout.Token).AsTask();
            var first = await Task.WhenAny(receive, child.Exited).ConfigureAwait(false);
            if (first == child.Exited)
                throw new ChildStartException($"{child} exited during its jail setup ({ChildProcess.DescribeStatus(child.Exited.Result)}); see its messages above");
            using var message = await receive.ConfigureAwait(false) ?? throw new ChildStartException($"{child} closed its channel before saying hello{await ExitNoteAsync(child).ConfigureAwait(false)}");
            var hello = Starting(message).Decode<Hello>();
            // The protocol version was checked with the header (IpcChannel.Version): a child of other binaries fails there.
            if (hello.Role != spec.Role || hello.Pid != pid)
                throw new ChildStartException($"{child} said hello as {hello.Role} {hello.Pid}");
            _log.Debug(StartupTrace.Template + " for {Child}", "hello", StartupTrace.NowMs, child);
            return child;
        }
        catch (Exception e) when (e is WireException or OperationCanceledException or SysCallException)
        {
            child.Kill();
            child.Dispose();
            throw new ChildStartException($"{child} failed to start: {e.Message}", e);
        }
        catch
        {
            child.Kill();
            child.Dispose();
            throw;
        }
    }

    /// <summary>Waits for the next message of a starting child, failing if it exits or stalls.</summary>
    private static async Task<T> ExpectAsync<T>(ChildProcess child, CancellationToken cancellationToken)
        where T : IWireMessage<T>
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(HandshakeTimeout);
        var receive = child.Channel.ReceiveAsync(timeout.Token).AsTask();
        var first = await Task.WhenAny(receive, child.Exited).ConfigureAwait(false);
        if (first == child.Exited)
            throw new ChildStartException($"{child} exited while starting ({ChildProcess.DescribeStatus(child.Exited.Result)})");
        using var message = await receive.ConfigureAwait(false) ?? throw new ChildStartException($"{child} closed its channel while starting{await ExitNoteAsync(child).ConfigureAwait(false)}");
        return Starting(message).Decode<T>();
    }

    /// <summary>
    /// A starting child's message checked against its table (<see cref="Peers.MasterFromStartingChild"/>:
    /// Hello, JailProof, Ready); the caller's <c>Decode</c> then holds it to that order and to the type's
    /// exact descriptor count. Anything else ends the child.
    /// </summary>
    private static IpcMessage Starting(IpcMessage message) =>
        Peers.MasterFromStartingChild.Allows(message.Type, PeerPhase.Setup) ? message
            : throw new WireException($"{Peers.MasterFromStartingChild.Sender} may not send {message.Type} while starting");

    /// <summary>A child that closed its channel is usually exiting: wait a moment for its status (and its last words on stderr).</summary>
    private static async Task<string> ExitNoteAsync(ChildProcess child)
    {
        await Task.WhenAny(child.Exited, Task.Delay(2000)).ConfigureAwait(false);
        await Task.Delay(50).ConfigureAwait(false);
        return child.Exited.IsCompleted ? $" ({ChildProcess.DescribeStatus(child.Exited.Result)}; see its messages above)" : string.Empty;
    }

    /// <summary>
    /// Logs the child's proof of its jail; throws when the jail does not hold. <paramref name="mustBeAbsent"/>
    /// (a chroot's): probes that must not exist at all in the child's view (lstat ENOENT), not merely be denied.
    /// </summary>
    private void CheckProof(ChildProcess child, JailProof proof, IReadOnlyCollection<string>? mustBeAbsent = null)
    {
        var chroot = mustBeAbsent is { Count: > 0 };
        string Existence(int i) =>
            !chroot ? string.Empty
            : proof.LStatErrors is null ? "existence not reported; "
            : proof.LStatErrors[i] == Libc.ENOENT ? "absent; "
            : proof.LStatErrors[i] == 0 ? "EXISTS; "
            : $"lstat {Libc.Describe(proof.LStatErrors[i])}; ";
        var denied = string.Join(", ", proof.Probes.Select((p, i) => $"{p.Path} [{Existence(i)}{p.ThreadsOpened}/{p.ThreadsTried} threads opened; {p.ChildOutcome}]"));
        var present = !chroot ? []
            : mustBeAbsent!.Where(path => proof.LStatErrors is null || Array.FindIndex(proof.Probes, p => p.Path == path) is var i && (i < 0 || proof.LStatErrors[i] != Libc.ENOENT)).ToList();
        if (present.Count > 0)
        {
            _log.Error("Jail of {Child} does NOT hold: its chroot shows (or does not report) {Present}; {Probes}", child, string.Join(", ", present), denied);
            throw new ChildStartException($"chroot of {child} does not hide {string.Join(", ", present)}");
        }

        if (!proof.Holds || proof.Uid != child.Uid)
        {
            _log.Error("Jail of {Child} does NOT hold: uid {Uid} gid {Gid}, root refused {RootRefused}, no_new_privs {NoNewPrivs}; {Probes}", child, proof.Uid, proof.Gid, proof.RegainRootRefused, proof.NoNewPrivs, denied);
            throw new ChildStartException($"jail of {child} does not hold");
        }

        _log.Information("Jail of {Child} holds: uid {Uid} gid {Gid}, root not regainable, no_new_privs; denied on every thread and from a child{Chroot}: {Probes}", child, proof.Uid, proof.Gid, chroot ? " (chroot: absent where required)" : string.Empty, denied);
    }
}
