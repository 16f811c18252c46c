using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Dispatch.Platform.Interop;
using Dispatch.Wire.Interop;
using Dispatch.Worker.Http;

namespace Dispatch.Worker.FastCgi;

/// <summary>
/// One php-fpm started by this worker, as the tenant and inside the worker's own jail (same uid, Landlock domain,
/// chroot and cgroup: a child inherits them all), for one vhost's <c>fastcgi.spawn</c>.
/// </summary>
/// <remarks>
/// <para><b>Start.</b> A generated config (one pool, <c>pm = ondemand</c>, <c>listen</c> on a socket of mode 0600 in the
/// tenant's own directory, <c>clear_env</c>, no user/group: there is no root master) is written next to the socket, and
/// php-fpm runs in the foreground (<c>-F</c>) with its log on stderr (<c>-O</c>), which the worker reads into the vhost's
/// error log, as it does the workers' output (<c>catch_workers_output</c>). It is spawned like a CGI script
/// (<see cref="CgiProcess"/>: posix_spawn, nothing inherited but three pipes, clean environment, a process group of its
/// own) through <c>setpriv --pdeathsig TERM</c> from a thread that lives as long as the worker, so php-fpm is told
/// to stop even when the worker is killed outright; php-fpm then stops its children.</para>
/// <para><b>Supervision.</b> Ready when its socket accepts a connection. When it dies it is started again after
/// 1 s, doubling up to 30 s while it keeps dying within a minute of its start; idle connections to the old one are
/// dropped. Each exit is logged with its status.</para>
/// <para><b>Stop.</b> SIGTERM to its process group, then SIGKILL after 5 s; reaped; socket and config removed.</para>
/// </remarks>
internal sealed class PhpFpmSupervisor : IAsyncDisposable
{
    public const string SetPriv = "/usr/bin/setpriv";

    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(20);
    private static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan StableRun = TimeSpan.FromMinutes(1);

    private readonly Dispatch.Wire.Payloads.FastCgiSpawnRoute _settings;
    private readonly Serilog.ILogger _log;
    private readonly Func<Func<CgiProcess>, Task<CgiProcess>> _spawn;
    private readonly string _vhost;
    private readonly string _configPath;
    private readonly string _tempDirectory;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _lock = new();
    private readonly string? _ownDirectory;
    private CgiProcess? _process;
    private Task _supervision = Task.CompletedTask;
    private int _starts;

    public PhpFpmSupervisor(string vhost, Dispatch.Wire.Payloads.FastCgiSpawnRoute settings, Serilog.ILogger log, Func<Func<CgiProcess>, Task<CgiProcess>> spawn, int index)
    {
        _vhost = vhost;
        _settings = settings;
        _log = log;
        _spawn = spawn;
        var directory = settings.Directory;
        if (directory.Length == 0)
        {
            _ownDirectory = directory = Directory.CreateTempSubdirectory("dispatch-php-fpm-").FullName;
        }

        var name = string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessId}-{index}");
        SocketPath = Path.Combine(directory, name + ".sock");
        _configPath = Path.Combine(directory, name + ".conf");
        _tempDirectory = Path.Combine(directory, name + ".tmp");
        if (Encoding.UTF8.GetByteCount(SocketPath) > 107)
        {
            throw new ArgumentException($"php-fpm socket path '{SocketPath}' is longer than 107 bytes.", nameof(settings));
        }
    }

    public string SocketPath { get; }

    /// <summary>The pool of connections to it: cleared when php-fpm restarts.</summary>
    public FastCgiConnectionPool? Pool { get; set; }

    /// <summary>The running php-fpm master's pid, or 0 (tests).</summary>
    public int Pid
    {
        get
        {
            lock (_lock)
            {
                return _process?.Pid ?? 0;
            }
        }
    }

    /// <summary>How many times php-fpm was started (tests: a restart after a crash).</summary>
    public int Starts => Volatile.Read(ref _starts);

    /// <summary>The generated php-fpm configuration.</summary>
    /// <param name="tempDirectory">PHP's temporary files (large request bodies, uploads, sessions): a directory of the
    /// tenant's that its jail lets it write.</param>
    internal static string BuildConfig(string socketPath, string tempDirectory, Dispatch.Wire.Payloads.FastCgiSpawnRoute settings)
    {
        var idle = (int)Math.Max(1, Math.Ceiling(settings.IdleTimeout.TotalSeconds));
        var values = new StringBuilder();
        var admin = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["sys_temp_dir"] = tempDirectory,
            ["upload_tmp_dir"] = tempDirectory,
            ["session.save_path"] = tempDirectory,
        };
        foreach (var (name, value) in settings.PhpAdminValues ?? Dispatch.Wire.Payloads.ValueDictionary.Empty)
        {
            if (name.Any(c => !(char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '_' or '.'))
                || value.Any(c => c < ' ' || c == 0x7f || c is '"' or '\\' or ';' or '[' or ']'))
            {
                throw new ArgumentException($"php_admin_value '{name}' is refused: not a directive name, or a value with line breaks, quotes, backslashes, ';' or brackets.", nameof(settings));
            }

            admin[name] = value;
        }

        foreach (var (name, value) in admin)
        {
            values.Append(CultureInfo.InvariantCulture, $"php_admin_value[{name}] = \"{value}\"\n");
        }

        return string.Create(
            CultureInfo.InvariantCulture,
            $"""
            ; Generated by Dispatch: php-fpm run by the tenant's worker, inside its jail. Do not edit.
            [global]
            daemonize = no
            ; php-fpm always opens its error_log; with -O (and -F) it logs to stderr as well, which the worker reads.
            error_log = /dev/null
            log_limit = 4096
            process_control_timeout = 5s

            [tenant]
            listen = {socketPath}
            listen.mode = 0600
            pm = ondemand
            pm.max_children = {settings.MaxChildren}
            pm.process_idle_timeout = {idle}s
            catch_workers_output = yes
            decorate_workers_output = no
            clear_env = yes
            security.limit_extensions = .php
            {values}
            """);
    }

    /// <summary>Writes the config, starts php-fpm and waits until its socket accepts connections.</summary>
    /// <exception cref="InvalidOperationException">php-fpm could not be started or did not become ready.</exception>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(_tempDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.WriteAllText(_configPath, BuildConfig(SocketPath, _tempDirectory, _settings));
        File.SetUnixFileMode(_configPath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var process = await LaunchAsync().ConfigureAwait(false);
        if (!await WaitReadyAsync(process, cancellationToken).ConfigureAwait(false))
        {
            await StopProcessAsync(process).ConfigureAwait(false);
            throw new InvalidOperationException(
                $"php-fpm {_settings.Program} for vhost {_vhost} did not accept connections on {SocketPath} within {ReadyTimeout.TotalSeconds:0} s (its log says why)");
        }

        _log.Information("php-fpm {Pid} of {Vhost} ready on {Socket}", process.Pid, _vhost, SocketPath);
        _supervision = SuperviseAsync(process);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _supervision.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }

        CgiProcess? process;
        lock (_lock)
        {
            process = _process;
            _process = null;
        }

        if (process is not null)
        {
            await StopProcessAsync(process).ConfigureAwait(false);
        }

        TryDelete(SocketPath);
        TryDelete(_configPath);
        try
        {
            Directory.Delete(_tempDirectory, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }

        if (_ownDirectory is not null)
        {
            try
            {
                Directory.Delete(_ownDirectory, recursive: true);
            }
            catch (IOException)
            {
            }
        }

        _stop.Dispose();
    }

    private async Task<CgiProcess> LaunchAsync()
    {
        // OPcache creates its lock file in the master at start (before any pool setting applies): /tmp by default,
        // which the jail does not let the tenant write.
        string[] php = [_settings.Program, "-F", "-O", "-y", _configPath, "-d", "opcache.lockfile_path=" + _tempDirectory];
        var viaSetPriv = File.Exists(SetPriv);
        string[] argv = viaSetPriv ? [SetPriv, "--pdeathsig", "TERM", "--", .. php] : php;
        var directory = Path.GetDirectoryName(SocketPath)!;
        TryDelete(SocketPath); // a socket left by a php-fpm killed outright
        var process = await _spawn(() => CgiProcess.Start(argv[0], directory, ["PATH=/usr/local/bin:/usr/bin:/bin"], argv)).ConfigureAwait(false);
        Interlocked.Increment(ref _starts);
        lock (_lock)
        {
            _process = process;
        }

        if (!viaSetPriv)
        {
            _log.Warning("php-fpm {Pid} of {Vhost} started without {SetPriv}: it outlives a worker that is killed outright", process.Pid, _vhost, SetPriv);
        }

        _ = PumpLogAsync(process.Stderr, process.Pid);
        _ = PumpLogAsync(process.Stdout, process.Pid);
        return process;
    }

    private async Task<bool> WaitReadyAsync(CgiProcess process, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stop.Token);
        deadline.CancelAfter(ReadyTimeout);
        while (!deadline.IsCancellationRequested && !process.Exited.IsCompleted)
        {
            if (File.Exists(SocketPath))
            {
                using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await probe.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath), deadline.Token).ConfigureAwait(false);
                    return true;
                }
                catch (SocketException)
                {
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }

            await Task.WhenAny(process.Exited, Task.Delay(20, CancellationToken.None)).ConfigureAwait(false);
        }

        return false;
    }

    private async Task SuperviseAsync(CgiProcess process)
    {
        var backoff = TimeSpan.FromSeconds(1);
        while (true)
        {
            var started = Environment.TickCount64;
            await process.Exited.WaitAsync(_stop.Token).ConfigureAwait(false);
            var status = process.Reap();
            lock (_lock)
            {
                _process = null;
            }

            await process.DisposeAsync().ConfigureAwait(false);
            Pool?.Clear();
            if (Environment.TickCount64 - started > StableRun.TotalMilliseconds)
            {
                backoff = TimeSpan.FromSeconds(1);
            }

            _log.Warning("php-fpm {Pid} of {Vhost} ended ({Status}): starting it again in {Delay} s", process.Pid, _vhost, CgiProcess.DescribeStatus(status), backoff.TotalSeconds);
            await Task.Delay(backoff, _stop.Token).ConfigureAwait(false);
            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, MaxBackoff.Ticks));
            try
            {
                process = await LaunchAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is CgiSpawnException or SysCallException)
            {
                _log.Error("php-fpm of {Vhost} could not be started again: {Reason}", _vhost, e.Message);
                return;
            }

            if (await WaitReadyAsync(process, _stop.Token).ConfigureAwait(false))
            {
                _log.Information("php-fpm {Pid} of {Vhost} ready again on {Socket}", process.Pid, _vhost, SocketPath);
            }
        }
    }

    private static async Task StopProcessAsync(CgiProcess process)
    {
        if (!process.Exited.IsCompleted)
        {
            Libc.Kill(-process.Pid, Libc.SIGTERM);
            Libc.Kill(process.Pid, Libc.SIGTERM);
            try
            {
                await process.Exited.WaitAsync(StopGrace).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
            }
        }

        await process.DisposeAsync().ConfigureAwait(false); // SIGKILL to what is left of the group, reaped
    }

    private async Task PumpLogAsync(CgiPipe pipe, int pid)
    {
        var lines = new FastCgiStderrLog(
            (line, truncated) => _log.Write(
                LevelOf(line), "php-fpm {Pid} of {Vhost}: {Line}{Truncated}", pid, _vhost, line, truncated ? " [truncated]" : string.Empty),
            static () => { },
            int.MaxValue);
        var buffer = new byte[4096];
        try
        {
            while (true)
            {
                var n = await pipe.ReadAsync(buffer, CancellationToken.None).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                lines.Write(buffer.AsSpan(0, n));
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException)
        {
        }

        lines.Complete();
    }

    /// <summary>php-fpm's own levels ("NOTICE: ", "WARNING: ", "ERROR: "…) as Serilog levels; a script's output: Warning.</summary>
    internal static Serilog.Events.LogEventLevel LevelOf(string line) =>
        line.Contains("] NOTICE: ", StringComparison.Ordinal) || line.Contains("] DEBUG: ", StringComparison.Ordinal) ? Serilog.Events.LogEventLevel.Information
        : line.Contains("] ERROR: ", StringComparison.Ordinal) || line.Contains("] ALERT: ", StringComparison.Ordinal) ? Serilog.Events.LogEventLevel.Error
        : Serilog.Events.LogEventLevel.Warning;

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }
}
