using Dispatch.Master.Config;
using Dispatch.Master.Files;
using Dispatch.Master.Operations;
using Dispatch.Platform.Spawn;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Serilog;

namespace Dispatch.Master.Children;

/// <summary>
/// SIGUSR2 (or the control command): upgrade without dropping a connection. For each slot, a new
/// dispatcher starts from the binaries installed now, on the same listening sockets (the master
/// holds them, so connections queued in them wait for whichever process accepts first); once it
/// is ready, the old one stops accepting and its workers and it finish what they have within
/// <c>dispatcher.stopGrace</c>. New workers start from the installed binaries too. If a new
/// dispatcher cannot start, the old ones keep serving. One upgrade at a time.
/// </summary>
internal sealed class Upgrade(DispatcherSlots slots, Reloader reloader, MasterCounters counters, ILogger log) : IDisposable
{
    private readonly SemaphoreSlim _upgrading = new(1, 1);

    public async Task<string> RunAsync(string why)
    {
        if (!await _upgrading.WaitAsync(0).ConfigureAwait(false))
        {
            log.Warning("Upgrade ({Why}) ignored: an upgrade is already in progress", why);
            return "an upgrade is already in progress";
        }

        try
        {
            var unsafePath = PathSafety.CheckRootOwned(RuntimePaths.AppDirectory);
            if (unsafePath is not null)
            {
                log.Error("Upgrade ({Why}) refused: {AppDirectory}: {Reason}; the running processes keep serving", why, RuntimePaths.AppDirectory, unsafePath);
                return $"refused: {unsafePath}";
            }

            if (ProtocolMismatch(RuntimePaths.AppDirectory) is { } mismatch)
            {
                log.Error("Upgrade ({Why}) refused: {Reason}; the running dispatchers keep serving", why, mismatch);
                counters.Add("dispatch_upgrades_total{result=\"refused\"}");
                return $"refused: {mismatch}";
            }

            log.Information("Upgrade ({Why}): starting new dispatchers from {AppDirectory}", why, RuntimePaths.AppDirectory);
            // No reload in between: each new dispatcher must start with the routes in force when it takes over.
            var replaced = await reloader.WithoutReloadAsync(async () =>
            {
                var replaced = new List<string>();
                for (var slot = 0; slot < slots.Count; slot++)
                {
                    var (old, fresh) = await slots.ReplaceAsync(slot).ConfigureAwait(false);
                    replaced.Add($"{old.Pid} -> {fresh.Pid}");
                }

                return replaced;
            }).ConfigureAwait(false);

            log.Information("Upgrade ({Why}) complete: dispatchers {Replaced}; the old ones drain", why, string.Join(", ", replaced));
            counters.Add("dispatch_upgrades_total{result=\"ok\"}");
            return $"upgraded: dispatchers {string.Join(", ", replaced)}";
        }
        catch (Exception e) when (e is ChildStartException or OperationCanceledException or SysCallException or WireException)
        {
            log.Error("Upgrade ({Why}) failed, the running dispatchers keep serving: {Reason}", why, e.Message);
            counters.Add("dispatch_upgrades_total{result=\"failed\"}");
            return $"failed: {e.Message}";
        }
        finally
        {
            _upgrading.Release();
        }
    }

    public void Dispose() => _upgrading.Dispose();

    /// <summary>
    /// The protocol version of the binaries installed in <paramref name="appDirectory"/>, read from their stamp
    /// (<see cref="ProtocolStamp"/>): null when it matches this master's, else why not. A master cannot talk to children
    /// of another protocol version, so such an upgrade needs a restart of the master.
    /// </summary>
    public static string? ProtocolMismatch(string appDirectory)
    {
        // Read from the installed files (IpcChannel.Version, a constant stamped into them), not by
        // running anything: the master's reaper owns every child's exit status.
        var path = ProtocolStamp.CarrierIn(appDirectory);
        try
        {
            var theirs = ProtocolStamp.Read(path);
            return theirs == IpcChannel.Version ? null
                : $"the installed binaries speak protocol {(theirs is null ? "(unknown)" : theirs.Value.ToString(System.Globalization.CultureInfo.InvariantCulture))} and this master {IpcChannel.Version}: restart the master to run them (systemctl restart dispatch)";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"could not read the protocol version of {path}: {e.Message}";
        }
    }
}
