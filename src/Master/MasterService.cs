using System.Net.Sockets;
using Dispatch.Master.Certificates;
using Dispatch.Master.Children;
using Dispatch.Master.Config;
using Dispatch.Master.Files;
using Dispatch.Master.Operations;
using Dispatch.Master.Sockets;
using Dispatch.Platform.Confinement;
using Dispatch.Platform.Hosting;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Dispatch.Wire.Payloads;
using Serilog;

namespace Dispatch.Master;

/// <summary>
/// The privileged process: binds the ports, starts and jails the dispatcher and the workers, answers
/// the dispatcher's requests for workers (by pool name only), reaps children. It never reads a byte
/// from a client: listening sockets are only passed on.
/// </summary>
/// <remarks>
/// Composition only: the parts, each owning its state and its lock, are wired together here, and the master's start
/// and stop are run from here. <see cref="DispatcherSlots"/> starts, serves, restarts and retires the dispatchers;
/// <see cref="WorkerStartup"/> starts a worker from request to hand-over and handles its exit (<see cref="WorkerTable"/>
/// holds who is running); <see cref="Reloader"/> and <see cref="Upgrade"/> run the operations of the same names;
/// <see cref="StatusReport"/> renders status and metrics from what <see cref="DispatcherReports"/> gathers.
/// </remarks>
internal sealed class MasterService : IDisposable
{
    private readonly ILogger _log;
    private readonly RunningConfig _config;
    private readonly CancellationTokenSource _stop = new();
    private readonly SystemdNotifier _systemd;
    private readonly Reaper _reaper;
    private readonly ChildLauncher _launcher;
    private readonly PoolCgroups _cgroups;
    private readonly CertificateWatcher _certificates;
    private readonly ListeningSockets _sockets = new();
    private readonly MasterCounters _counters = new();
    private readonly WorkerTable _workers = new();
    private readonly WorkerStartup _startup;
    private readonly DispatcherReports _reports;
    private readonly StatusReport _status;
    private readonly Reloader _reloader;
    private readonly DispatcherSlots _slots;
    private readonly Upgrade _upgrade;
    private ControlServer? _control;
    private int _exitCode;

    private volatile bool _immediate;
    // Completed by SIGQUIT: a drain already under way ends at once.
    private readonly TaskCompletionSource _immediateStop = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public MasterService(DispatchConfig config, ILogger log)
    {
        _config = new RunningConfig(config);
        _log = log;
        _systemd = new SystemdNotifier(log);
        _reaper = new Reaper(OnChildExit);
        _launcher = new ChildLauncher(_reaper, log);
        _cgroups = new PoolCgroups(log);
        _certificates = new CertificateWatcher(log, () => ReloadInBackground("certificate changed"));
        _startup = new WorkerStartup(_config, _workers, _launcher, _cgroups, _counters, log, d => _slots!.StateOf(d), _stop.Token);
        _reports = new DispatcherReports(log);
        _status = new StatusReport(_config, _workers, _startup.Backoff, _reports, () => _slots!.Live(), _counters, log);
        _reloader = new Reloader(_config, _cgroups, _startup.Backoff, _reports, _status, () => _slots!.Serving(), Reloaded, log);
        _slots = new DispatcherSlots(_config, _sockets, _launcher, _workers, _startup, _reports, _status, _reloader, _counters, log, Fatal, _stop.Token);
        _upgrade = new Upgrade(_slots, _reloader, _counters, log);
    }

    /// <summary>SIGTERM: stop accepting, let open connections finish within the grace period.</summary>
    public void RequestStop()
    {
        // systemd hears it first, on the signal's own thread, whatever the rest of the stop does.
        _systemd.Stopping($"stopping: open connections have {_config.Current.Dispatcher.StopGrace.TotalSeconds:F0} s to finish");
        CancelStop();
    }

    /// <summary>SIGQUIT: stop now (children get no grace); during a drain, ends it.</summary>
    public void RequestImmediateStop()
    {
        _immediate = true;
        _systemd.Stopping("stopping at once");
        _immediateStop.TrySetResult();
        CancelStop();
    }

    /// <inheritdoc cref="Reloader.ReloadAsync"/>
    public Task<string> ReloadAsync(string why) => _reloader.ReloadAsync(why);

    /// <summary>Whether the config in force says an edit of its files reloads by itself (<c>reload.onChange</c>).</summary>
    public bool ReloadsOnChange => _config.Current.Operations.ReloadOnChange;

    /// <summary>A reload asked for by a signal or a watched file: run in the background, its failure logged.</summary>
    public void ReloadInBackground(string why) => FireAndForget.Observe(ReloadAsync(why), _log, $"Reload ({why})");

    /// <summary>An upgrade asked for by a signal: run in the background, its failure logged.</summary>
    public void UpgradeInBackground(string why) => FireAndForget.Observe(UpgradeAsync(why), _log, $"Upgrade ({why})");

    /// <inheritdoc cref="Upgrade.RunAsync"/>
    public Task<string> UpgradeAsync(string why) => _upgrade.RunAsync(why);

    /// <inheritdoc cref="StatusReport.StatusAsync"/>
    public Task<string> StatusAsync(bool json) => _status.StatusAsync(json);

    /// <summary>SIGUSR1 (logrotate): reopen every access and error log and hand the new descriptors to the running workers.</summary>
    public void ReopenLogs() => WorkerLogFiles.Reopen(_workers.All(), _config.Current, _log);

    public async Task<int> RunAsync()
    {
        var config = _config.Current;
        try
        {
            // A stop asked for before the service existed: start nothing.
            _stop.Token.ThrowIfCancellationRequested();
            // One master per control socket and per port: a second one fails here, saying why, before it binds
            // anything or touches the pools' cgroups (which are the running master's).
            if (ControlServer.AnotherMasterAnswers(config.Operations.ControlSocket))
                throw new ChildStartException($"another master answers on the control socket {config.Operations.ControlSocket}");
            _sockets.Open(config);
            if (!_cgroups.Apply(config))
                throw new ChildStartException("a pool's cgroup could not be set up and cgroup:required is true");
            await _slots.StartAllAsync().ConfigureAwait(false);
            foreach (var v in config.Vhosts.Values.Where(v => v.TlsMode == TlsModes.Terminate && !v.OfferH2 && v.Identity is null))
                _log.Warning("Vhost {Vhost}: its certificate also covers names served by another pool, so HTTP/2 is not offered for it (browsers would coalesce those names onto one connection)", v.Name);
            _control = ControlServer.Start(config.Operations.ControlSocket, this, _log);
            // The one readiness line, whatever the log level (supervisors and tests wait for it).
            var readiness = _log.IsEnabled(Serilog.Events.LogEventLevel.Information) ? _log : new LoggerConfiguration().WriteTo.Console(formatProvider: System.Globalization.CultureInfo.InvariantCulture).CreateLogger();
            var dispatchers = _slots.Current;
            readiness.Information(
                "Dispatch ready: master {MasterPid}; dispatcher {DispatcherPid} (uid {DispatcherUid}){More}; listening {Listeners}",
                Environment.ProcessId,
                dispatchers[0].Pid,
                dispatchers[0].Uid,
                dispatchers.Length > 1 ? $"; more dispatchers: {string.Join(", ", dispatchers.Skip(1).Select(d => d.Pid))}" : string.Empty,
                string.Join(", ", config.Listen));
            _certificates.Watch(_config.Current);
            LandlockAbiWarning.Log(_config.Current, _log);
            _systemd.Ready();
            // What the start allocated, and what re-logging the children's lines did once they fall quiet, goes back to
            // the system (docs/faults.md: the master's RSS after 100,000 connections); a quiet master has no timer running.
            using var trim = new MemoryTrim(() => StderrPump.Lines.Open, TimeSpan.FromSeconds(2), _log, StderrPump.Lines.TakePeak);
            StderrPump.Lines.Busy = trim.Wake;
            await _slots.ServeAllAsync().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // A stop during the start cuts short whatever was starting, however that surfaces.
        catch (Exception e) when (_stop.IsCancellationRequested && e is not OperationCanceledException)
#pragma warning restore CA1031
        {
            _log.Information("Stopped during the start ({Reason})", e.Message);
        }
        catch (ChildStartException e)
        {
            _log.Fatal("Could not start: {Reason}", e.Message);
            _exitCode = 1;
        }
        catch (SocketException e)
        {
            _log.Fatal("Could not listen: {Reason}", e.Message);
            _exitCode = 1;
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
#pragma warning disable CA1031 // Whatever went wrong, systemd must hear STOPPING=1 and the children must stop.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _log.Fatal(e, "Unexpected error; stopping: {Reason}", e.Message);
            _exitCode = 70;
        }

        if (!_systemd.StoppingNotified)
            _systemd.Stopping(_exitCode == 0 ? "stopping" : "stopping after a fatal error (see the log)");
        await StopChildrenAsync(_immediate ? TimeSpan.Zero : _config.Current.Dispatcher.StopGrace).ConfigureAwait(false);
        _cgroups.RemoveAll();
        if (!await StderrPump.DrainAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false))
            _log.Information("A child's stderr was still open 2 s after the children exited (a process it left behind holds it): its last lines may be lost");
        _log.Information("Master {Pid} exiting with status {Status}", Environment.ProcessId, _exitCode);
        return _exitCode;
    }

    public void Dispose()
    {
        _sockets.Dispose();
        _control?.Dispose();
        _stop.Dispose();
        _reaper.Dispose();
        _reloader.Dispose();
        _upgrade.Dispose();
        _certificates.Dispose();
    }

    private void CancelStop()
    {
        try
        {
            // Callbacks run inline; a continuation may go on into the stop itself.
            _stop.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // A signal while the master was already exiting.
        }
    }

    /// <summary>A dispatcher slot cannot go on: the master stops, with status 1.</summary>
    private void Fatal()
    {
        _exitCode = 1;
        _stop.Cancel();
    }

    /// <summary>A reload put <paramref name="fresh"/> in force: spares for its pools, its certificates watched, its Landlock limits said.</summary>
    private void Reloaded(DispatchConfig fresh)
    {
        foreach (var d in _slots.Serving())
            _startup.TopUpSpares(d);
        _certificates.Watch(fresh);
        LandlockAbiWarning.Log(fresh, _log);
    }

    /// <summary>The reaper collected a child: a dispatcher's exit is its slot's, anything else a worker's.</summary>
    private void OnChildExit(ChildProcess child, int status)
    {
        if (!_slots.OnExit(child, status))
            _startup.OnExit(child, status);
    }

    private async Task StopChildrenAsync(TimeSpan grace)
    {
        List<ChildProcess> children = [.. _workers.All(), .. _slots.All()];
        foreach (var c in children)
        {
            try
            {
                c.Channel.Send(new Stop((uint)grace.TotalMilliseconds));
            }
            catch (Exception e) when (e is SysCallException or ObjectDisposedException)
            {
            }
        }

        // The dispatchers have closed their copies: closing the master's makes new connections be
        // refused at once instead of waiting in a backlog no one will accept from.
        _sockets.Dispose();
        _control?.Dispose();

        var all = Task.WhenAll(children.Select(c => c.Exited));
        // A stop that began with a grace (SIGTERM) is cut short by SIGQUIT; one without (SIGQUIT) gives Stop(0) its moment.
        Task[] waits = grace > TimeSpan.Zero ? [all, Task.Delay(grace + TimeSpan.FromSeconds(2)), _immediateStop.Task] : [all, Task.Delay(grace + TimeSpan.FromSeconds(2))];
        var done = await Task.WhenAny(waits).ConfigureAwait(false);
        if (done != all && !all.IsCompleted)
        {
            foreach (var c in children.Where(c => !c.Exited.IsCompleted))
            {
                if (done == _immediateStop.Task)
                    _log.Warning("SIGQUIT during the drain: killing {Child}", c);
                else
                    _log.Warning("{Child} did not stop within {Grace}; killing it", c, grace);
                c.Kill();
            }

            await Task.WhenAny(all, Task.Delay(2000)).ConfigureAwait(false);
        }
    }
}
