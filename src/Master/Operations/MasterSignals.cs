using System.Runtime.InteropServices;
using Dispatch.Platform.Interop;

namespace Dispatch.Master.Operations;

/// <summary>
/// The master's signals, taken over before anything else runs. Two things would otherwise lose them:
/// <list type="bullet">
/// <item>A signal ignored when the master was exec'd stays ignored: .NET "respects ignored signals" and
/// silently installs no handler for a <see cref="PosixSignalRegistration"/> of one. A background job of a
/// non-interactive shell (<c>cmd &amp;</c> in a script or CI step) inherits SIGINT and SIGQUIT ignored,
/// <c>nohup</c> SIGHUP: SIGQUIT then did nothing at all (no STOPPING=1, no exit). A daemon owns its
/// signals, so the ones it handles are reset to their default first — before the runtime's console
/// and signal layer starts (the first Console use), which records the dispositions once.</item>
/// <item>A signal before the service exists: it is remembered and applied when the service attaches,
/// which then stops before it starts anything (a stop still tells systemd STOPPING=1).</item>
/// </list>
/// </summary>
internal sealed class MasterSignals : IDisposable
{
    private const int SIGHUP = 1, SIGINT = 2, SIGQUIT = 3, SIGUSR1 = 10, SIGUSR2 = 12, SIGTERM = 15;
    private static readonly int[] Handled = [SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM];
    // Never disposed: disposing one restores the default action, and a late SIGTERM would then kill an exiting master.
    private static readonly List<PosixSignalRegistration> Registrations = [];
    private readonly Lock _gate = new();
    private MasterService? _master;
    private bool _stopPending;
    private bool _immediatePending;
    private bool _detached;

    private MasterSignals()
    {
    }

    /// <summary>The signals that were ignored when the master started (and are handled now).</summary>
    public IReadOnlyList<string> WereIgnored { get; private set; } = [];

    /// <summary>The signals the runtime still ignores after registration (should be none): each would be lost.</summary>
    public IReadOnlyList<string> StillIgnored { get; private set; } = [];

    /// <summary>Call first in Main, before any Console use.</summary>
    public static MasterSignals Install()
    {
        var signals = new MasterSignals();
        signals.WereIgnored = [.. Handled.Where(Libc.ResetIfIgnored).Select(Name)];
        Register(PosixSignal.SIGTERM, c => signals.Stop(c, immediate: false));
        Register(PosixSignal.SIGINT, c => signals.Stop(c, immediate: false));
        Register(PosixSignal.SIGQUIT, c => signals.Stop(c, immediate: true));
        Register(PosixSignal.SIGHUP, c => signals.WithMaster(c, m => m.ReloadInBackground("SIGHUP")));
        Register((PosixSignal)SIGUSR1, c =>
        {
            c.Cancel = true;
            Program.ReopenableFile?.Reopen();
            signals.WithMaster(c, m => m.ReopenLogs());
        });
        Register((PosixSignal)SIGUSR2, c => signals.WithMaster(c, m => m.UpgradeInBackground("SIGUSR2")));
        signals.StillIgnored = [.. Handled.Where(Libc.IsIgnored).Select(Name)];
        return signals;
    }

    private static string Name(int sig) => sig switch
    {
        SIGHUP => "SIGHUP",
        SIGINT => "SIGINT",
        SIGQUIT => "SIGQUIT",
        SIGUSR1 => "SIGUSR1",
        SIGUSR2 => "SIGUSR2",
        SIGTERM => "SIGTERM",
        _ => $"signal {sig}",
    };

    private static void Register(PosixSignal signal, Action<PosixSignalContext> handler) =>
        Registrations.Add(PosixSignalRegistration.Create(signal, handler));

    /// <summary>From now on signals go to <paramref name="master"/>; a stop asked for before is applied now.</summary>
    public void Attach(MasterService master)
    {
        bool stop, immediate;
        lock (_gate)
        {
            _master = master;
            (stop, immediate) = (_stopPending, _immediatePending);
        }

        if (immediate)
            master.RequestImmediateStop();
        else if (stop)
            master.RequestStop();
    }

    private void Stop(PosixSignalContext context, bool immediate)
    {
        context.Cancel = true;
        MasterService? master;
        lock (_gate)
        {
            if (_detached)
                return; // The master is exiting.
            master = _master;
            _stopPending = true;
            _immediatePending |= immediate;
        }

        if (master is null)
            return;
        if (immediate)
            master.RequestImmediateStop();
        else
            master.RequestStop();
    }

    /// <summary>Reload, reopen, upgrade: meaningful only once the service runs (before, the default action would kill the master).</summary>
    private void WithMaster(PosixSignalContext context, Action<MasterService> action)
    {
        context.Cancel = true;
        MasterService? master;
        lock (_gate)
            master = _master;
        if (master is not null)
            action(master);
    }

    /// <summary>Detaches the service: signals from now on (the master is exiting) change nothing.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            _master = null;
            _detached = true;
        }
    }
}
