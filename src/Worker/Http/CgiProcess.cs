using System.Runtime.InteropServices;
using System.Text;
using Dispatch.Platform.Interop;
using Dispatch.Platform.Spawn;
using Dispatch.Wire.Interop;

namespace Dispatch.Worker.Http;

/// <summary>posix_spawn failed; <see cref="Errno"/> is its error (ENOENT, EACCES, ENOEXEC, …).</summary>
internal sealed class CgiSpawnException(string message, int errno) : Exception(message)
{
    public int Errno { get; } = errno;
}

/// <summary>
/// One running CGI script: spawned with posix_spawn (never <c>Process.Start</c>, which hands the child every descriptor
/// without CLOEXEC), stdin/stdout/stderr on pipes whose parent ends are non-blocking and driven by the
/// <see cref="FdReactor"/>, nothing else inherited (closefrom 3), the script's directory as working directory, the given
/// environment only, default signal dispositions, an empty signal mask, and a process group of its own.
/// </summary>
/// <remarks>
/// <para>The exit is observed through a pidfd (a thread blocked in waitid where pidfd_open is missing), without
/// reaping, so the pid — and with it the process group id — cannot be reused while the group may still be signalled:
/// <see cref="Kill"/> signals the group only until <see cref="Reap"/>, which kills whatever is left in the group and
/// only then collects the exit status. Every process is reaped: <see cref="DisposeAsync"/> kills it if needed.</para>
/// <para>A script that leaves its process group (setsid, setpgid) escapes the group kill; the leader is always
/// signalled by pid as well.</para>
/// </remarks>
internal sealed class CgiProcess : IAsyncDisposable
{
    /// <summary>Its watches' owner in the <see cref="FdReactor"/> (a script's pipes and pidfd).</summary>
    internal const string WatchOwner = "cgi";

    private readonly Lock _lock = new();
    private readonly int _pidfd;
    private readonly Task _exited;
    private bool _reaped;
    private int _disposed;

    private CgiProcess(int pid, int pidfd, CgiPipe stdin, CgiPipe stdout, CgiPipe stderr)
    {
        Pid = pid;
        _pidfd = pidfd;
        Stdin = stdin;
        Stdout = stdout;
        Stderr = stderr;
        _exited = pidfd >= 0 ? WatchPidfdAsync() : WaitOnThread();
    }

    public int Pid { get; }

    /// <summary>The write end of the script's stdin.</summary>
    public CgiPipe Stdin { get; }

    /// <summary>The read end of the script's stdout.</summary>
    public CgiPipe Stdout { get; }

    /// <summary>The read end of the script's stderr.</summary>
    public CgiPipe Stderr { get; }

    /// <summary>The raw wait status once reaped.</summary>
    public int? WaitStatus { get; private set; }

    /// <summary>Completes when the script (the group leader) has exited; it is not reaped yet.</summary>
    public Task Exited => _exited;

    /// <summary>Starts <paramref name="path"/> in <paramref name="directory"/> with exactly <paramref name="environment"/>.</summary>
    /// <exception cref="CgiSpawnException">posix_spawn failed.</exception>
    /// <param name="arguments">argv; <see langword="null"/>: the path alone (a CGI script gets no arguments).</param>
    public static unsafe CgiProcess Start(string path, string directory, string[] environment, string[]? arguments = null)
    {
        var fds = stackalloc int[6] { -1, -1, -1, -1, -1, -1 };
        try
        {
            for (var i = 0; i < 3; i++)
            {
                if (Libc.Pipe2(fds + (2 * i), Libc.O_CLOEXEC) != 0)
                {
                    SysCallException.ThrowLast("pipe2");
                }
            }

            // Child ends: stdin's read end, stdout's and stderr's write ends. Parent ends become non-blocking (a pipe's
            // two ends are separate open files, so the child's ends stay blocking).
            int childIn = fds[0], parentIn = fds[1], parentOut = fds[2], childOut = fds[3], parentErr = fds[4], childErr = fds[5];
            foreach (var fd in (ReadOnlySpan<int>)[parentIn, parentOut, parentErr])
            {
                var flags = Libc.Fcntl(fd, Libc.F_GETFL, 0);
                if (flags < 0 || Libc.Fcntl(fd, Libc.F_SETFL, flags | Libc.O_NONBLOCK) != 0)
                {
                    SysCallException.ThrowLast("fcntl(O_NONBLOCK)");
                }
            }

            var pid = Spawn(path, directory, environment, childIn, childOut, childErr, arguments);
            Libc.Close(childIn);
            Libc.Close(childOut);
            Libc.Close(childErr);
            fds[0] = fds[3] = fds[5] = -1;

            var pidfd = (int)Libc.Syscall4((nint)CgiNative.SysPidfdOpen, pid, 0, 0, 0);
            var process = new CgiProcess(pid, pidfd, new CgiPipe(parentIn), new CgiPipe(parentOut), new CgiPipe(parentErr));
            fds[1] = fds[2] = fds[4] = -1;
            return process;
        }
        finally
        {
            for (var i = 0; i < 6; i++)
            {
                if (fds[i] >= 0)
                {
                    Libc.Close(fds[i]);
                }
            }
        }
    }

    /// <summary>SIGKILL to the script and its process group, unless already reaped. Safe from any thread, any time.</summary>
    public void Kill()
    {
        lock (_lock)
        {
            if (_reaped)
            {
                return;
            }

            Libc.Kill(-Pid, Libc.SIGKILL);
            Libc.Kill(Pid, Libc.SIGKILL);
        }
    }

    /// <summary>
    /// After <see cref="Exited"/>: kills what is left of the process group, then collects the exit status.
    /// Returns the raw wait status. Idempotent.
    /// </summary>
    public unsafe int Reap()
    {
        lock (_lock)
        {
            if (WaitStatus is { } known)
            {
                return known;
            }

            // The group leader is a zombie: its pid (= the group id) cannot have been reused yet.
            Libc.Kill(-Pid, Libc.SIGKILL);
            int status;
            while (Libc.WaitPid(Pid, &status, 0) < 0)
            {
                if (Libc.LastError != Libc.EINTR)
                {
                    status = -1; // ECHILD: reaped elsewhere (a SIGCHLD handler reaping everything); nothing to collect.
                    break;
                }
            }

            _reaped = true;
            WaitStatus = status;
            return status;
        }
    }

    /// <summary>"exit status 3", "killed by signal 9".</summary>
    public static string DescribeStatus(int status) =>
        status == -1 ? "unknown status"
        : (status & 0x7f) == 0 ? $"exit status {(status >> 8) & 0xff}"
        : $"killed by signal {status & 0x7f}";

    /// <summary>Kills the script if it is still running, waits for its exit, reaps it, closes every descriptor.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        Stdin.Dispose();
        Stdout.Dispose();
        Stderr.Dispose();
        if (!_exited.IsCompleted)
        {
            Kill();
            try
            {
                await _exited.WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                // Stuck in the kernel (uninterruptible sleep): reap whenever it finally dies, never leave a zombie.
                _ = _exited.ContinueWith(_ => Finish(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
                return;
            }
        }

        Finish();
    }

    private void Finish()
    {
        Reap();
        if (_pidfd >= 0)
        {
            Libc.Close(_pidfd);
        }
    }

    private static unsafe int Spawn(string path, string directory, string[] environment, int stdin, int stdout, int stderr, string[]? arguments)
    {
        var actions = NativeMemory.AllocZeroed(Libc.PosixSpawnFileActionsSize);
        var attr = NativeMemory.AllocZeroed(Libc.PosixSpawnAttrSize);
        using var strings = new NativeStrings();
        var actionsReady = false;
        var attrReady = false;
        try
        {
            Check(Libc.PosixSpawnFileActionsInit(actions), "posix_spawn_file_actions_init");
            actionsReady = true;

            // Pipes from pipe2 are never 0-2 here (those are the worker's own stdio), so dup2 clears CLOEXEC.
            Check(Libc.PosixSpawnFileActionsAddDup2(actions, stdin, 0), "posix_spawn_file_actions_adddup2(0)");
            Check(Libc.PosixSpawnFileActionsAddDup2(actions, stdout, 1), "posix_spawn_file_actions_adddup2(1)");
            Check(Libc.PosixSpawnFileActionsAddDup2(actions, stderr, 2), "posix_spawn_file_actions_adddup2(2)");
            Check(Libc.PosixSpawnFileActionsAddCloseFrom(actions, 3), "posix_spawn_file_actions_addclosefrom_np");
            Check(CgiNative.PosixSpawnFileActionsAddChdir(actions, directory), "posix_spawn_file_actions_addchdir_np");

            Spawner.InitCleanAttributes(attr);
            attrReady = true;

            // argv is the script alone: no "indexed" query arguments (RFC 3875 4.4), the door of CVE-2012-1823.
            int pid;
            var rc = Libc.PosixSpawn(&pid, strings.Utf8(path), actions, attr, strings.Array(arguments ?? [path]), strings.Array(environment));
            if (rc != 0)
            {
                throw new CgiSpawnException($"posix_spawn({path}) failed: {Libc.Describe(rc)}", rc);
            }

            return pid;
        }
        finally
        {
            if (actionsReady)
            {
                Libc.PosixSpawnFileActionsDestroy(actions);
            }

            if (attrReady)
            {
                Libc.PosixSpawnAttrDestroy(attr);
            }

            NativeMemory.Free(actions);
            NativeMemory.Free(attr);
        }
    }

    private static void Check(int rc, string what)
    {
        if (rc != 0)
        {
            throw new SysCallException(what, rc);
        }
    }

    /// <summary>True once the leader has exited (a zombie), without reaping it.</summary>
    private unsafe bool HasExited()
    {
        var info = stackalloc byte[CgiNative.SigInfoSize];
        new Span<byte>(info, CgiNative.SigInfoSize).Clear();
        if (CgiNative.WaitId(CgiNative.PPid, (uint)Pid, info, CgiNative.WExited | CgiNative.WNoHang | CgiNative.WNoWait) != 0)
        {
            return Libc.LastError != Libc.EINTR; // ECHILD: gone already
        }

        return *(int*)(info + CgiNative.SigInfoPidOffset) != 0;
    }

    private async Task WatchPidfdAsync()
    {
        using var watch = FdReactor.Shared.Watch(_pidfd, WatchOwner);
        while (!HasExited())
        {
            // A pidfd turns readable when the process exits.
            await watch.WaitAsync(Libc.EPOLLIN, CancellationToken.None).ConfigureAwait(false);
        }
    }

    private unsafe Task WaitOnThread()
    {
        // No pidfd_open (kernel < 5.3, or filtered): one short-lived thread per script, blocked in waitid(WNOWAIT).
        var completion = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            var info = stackalloc byte[CgiNative.SigInfoSize];
            while (CgiNative.WaitId(CgiNative.PPid, (uint)Pid, info, CgiNative.WExited | CgiNative.WNoWait) != 0
                   && Libc.LastError == Libc.EINTR)
            {
            }

            completion.TrySetResult();
        })
        {
            IsBackground = true,
            Name = "CGI exit wait",
        };
        thread.Start();
        return completion.Task;
    }
}

/// <summary>The parent's non-blocking end of one CGI pipe.</summary>
internal sealed class CgiPipe : IDisposable
{
    private const int EPipe = 32;
    private readonly FdWatch _watch;
    private int _fd;

    public CgiPipe(int fd)
    {
        _fd = fd;
        _watch = FdReactor.Shared.Watch(fd, CgiProcess.WatchOwner);
    }

    /// <summary>Reads what is available (waiting for something); 0 at end of file.</summary>
    public async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var n = TryRead(buffer.Span, out var errno);
            if (n >= 0)
            {
                return (int)n;
            }

            if (errno == Libc.EAGAIN)
            {
                await _watch.WaitAsync(Libc.EPOLLIN, cancellationToken).ConfigureAwait(false);
            }
            else if (errno != Libc.EINTR)
            {
                throw new IOException($"read from a CGI pipe failed: {Libc.Describe(errno)}");
            }
        }
    }

    /// <summary>Writes everything; <see langword="false"/> when the reader has closed its end (EPIPE).</summary>
    public async ValueTask<bool> WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken)
    {
        while (!buffer.IsEmpty)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var n = TryWrite(buffer.Span, out var errno);
            if (n > 0)
            {
                buffer = buffer[(int)n..];
            }
            else if (errno == Libc.EAGAIN)
            {
                await _watch.WaitAsync(CgiNative.EpollOut, cancellationToken).ConfigureAwait(false);
            }
            else if (errno == EPipe)
            {
                return false;
            }
            else if (errno != Libc.EINTR)
            {
                throw new IOException($"write to a CGI pipe failed: {Libc.Describe(errno)}");
            }
        }

        return true;
    }

    public void Dispose()
    {
        var fd = Interlocked.Exchange(ref _fd, -1);
        if (fd < 0)
        {
            return;
        }

        _watch.Dispose();
        Libc.Close(fd);
    }

    private unsafe nint TryRead(Span<byte> buffer, out int errno)
    {
        var fd = Volatile.Read(ref _fd);
        ObjectDisposedException.ThrowIf(fd < 0, this);
        nint n;
        fixed (byte* p = buffer)
        {
            n = CgiNative.Read(fd, p, (nuint)buffer.Length);
        }

        errno = n < 0 ? Libc.LastError : 0;
        return n;
    }

    private unsafe nint TryWrite(ReadOnlySpan<byte> buffer, out int errno)
    {
        var fd = Volatile.Read(ref _fd);
        ObjectDisposedException.ThrowIf(fd < 0, this);
        nint n;
        fixed (byte* p = buffer)
        {
            n = Libc.Write(fd, p, (nuint)buffer.Length);
        }

        errno = n < 0 ? Libc.LastError : 0;
        return n;
    }
}
