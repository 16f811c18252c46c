using System.Diagnostics;
using Dispatch.Master.Children;
using Dispatch.Master.Config;
using Dispatch.Platform.Confinement;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Dispatch.Wire.Payloads;

namespace Dispatch.Master;

/// <summary>
/// Reload: the config is read and checked in full (<see cref="ConfigLoader.Load"/>, as <c>check</c> and <c>run</c> do),
/// compared with the running one (<see cref="ConfigDiff"/>), and swapped in; dispatchers confirm the new routes.
/// </summary>
internal sealed partial class MasterService
{
    /// <summary>
    /// SIGHUP or an edit of the config file: validate the new config in full; if it is good, new
    /// connections get the new routes (open ones keep theirs) and the workers of changed or removed
    /// pools finish and leave; if it is not, every error is logged with its JSON path and the last
    /// good config keeps serving. Listeners and the dispatcher's identity need a restart.
    /// </summary>
    public async Task<string> ReloadAsync(string why)
    {
        await _reloading.WaitAsync().ConfigureAwait(false);
        var clock = Stopwatch.StartNew();
        try
        {
            var (fresh, errors) = ConfigLoader.Load(_config.SourcePath);
            if (fresh is null)
            {
                foreach (var e in errors)
                    _log.Error("Reload ({Why}) rejected, the last good configuration keeps serving: {Error}", why, e.ToString());
                var detail = $"rejected ({why}): {string.Join("; ", errors.Take(5))}{(errors.Count > 5 ? $"; and {errors.Count - 5} more" : string.Empty)}";
                RecordReload("rejected", detail);
                return detail;
            }

            if (ConfigDiff.NeedsRestart(_config, fresh))
            {
                _log.Error("Reload ({Why}) rejected: changes to listen, dispatcher, control or metrics need a restart; the last good configuration keeps serving", why);
                RecordReload("rejected", $"rejected ({why}): changes to listen, dispatcher, control or metrics need a restart");
                return "rejected: changes to listen, dispatcher, control or metrics need a restart";
            }

            // Limits change in place (the pool's workers stay); a pool that gains or loses its group is retired below.
            _cgroups.Apply(fresh);
            var old = _config;
            var retired = ConfigDiff.RetiredPools(old, fresh);
            foreach (var pool in _backoff.Clear(retired))
                _log.Information("Pool {Pool} changed in the reload: its start backoff is cleared", pool);
            var version = Interlocked.Increment(ref _snapshotVersion);
            _config = fresh;
            var memfd = SealedBlob.Create("dispatch-routes", SnapshotJson.Serialize(Projections.Snapshot(fresh, version)));
            List<ChildProcess> updated = [.. _dispatchers.OfType<ChildProcess>().Where(d => !d.Exited.IsCompleted)];
            try
            {
                foreach (var d in updated)
                    d.Channel.Send(new RouteUpdate(retired), [memfd]);
            }
            finally
            {
                Libc.Close(memfd);
            }

            // "Reloaded" means new connections get the new routes: each dispatcher has swapped them in (it parses
            // the snapshot, which takes a while with thousands of vhosts) before this is logged or answered.
            var unconfirmed = await UnconfirmedAsync(updated).ConfigureAwait(false);
            var (added, removed, changed) = ConfigDiff.Vhosts(old, fresh);
            _log.Information(
                "Configuration reloaded ({Why}), version {Version}: {Vhosts} vhosts in {Pools} pools; vhosts added {Added}, removed {Removed}, changed {Changed}; workers retired for {Retired}{Included}; in {Elapsed:F0} ms{Unconfirmed}",
                why, version, fresh.Vhosts.Count, fresh.Pools.Count, added, removed, changed, retired.Length == 0 ? "no pool" : string.Join(", ", retired), fresh.Included is null ? string.Empty : $"; include {fresh.Included}", clock.Elapsed.TotalMilliseconds,
                unconfirmed.Count == 0 ? string.Empty : $"; NOT yet confirmed by dispatcher {string.Join(", ", unconfirmed)}");
            foreach (var d in _dispatchers.Where(d => d is { Exited.IsCompleted: false }))
                TopUpSpares(d!);
            _certificates.Watch(_config);
            WarnAboutLandlock();
            var summary = $"version {version} ({why}): {fresh.Vhosts.Count} vhosts in {fresh.Pools.Count} pools; workers retired for {(retired.Length == 0 ? "no pool" : string.Join(", ", retired))}";
            RecordReload("ok", summary);
            return "reloaded: " + summary;
        }
        catch (Exception e) when (e is SysCallException or WireException or IOException)
        {
            _log.Error("Reload ({Why}) failed: {Reason}", why, e.Message);
            RecordReload("failed", $"failed ({why}): {e.Message}");
            return "failed: " + e.Message;
        }
        finally
        {
            _reloading.Release();
        }
    }

    /// <summary>The dispatchers (pids) that neither confirmed what was sent to them within <see cref="ConfirmTimeout"/> nor exited.</summary>
    private async Task<List<int>> UnconfirmedAsync(IEnumerable<ChildProcess> dispatchers)
    {
        var asks = dispatchers.Select(async d =>
        {
            try
            {
                var ask = AskStatsAsync(d, ConfirmTimeout);
                if (await Task.WhenAny(ask, d.Exited).ConfigureAwait(false) == ask)
                    await ask.ConfigureAwait(false);
                return 0;
            }
            catch (Exception e) when (e is TimeoutException or SysCallException or ObjectDisposedException)
            {
                return d.Exited.IsCompleted ? 0 : d.Pid;
            }
        });
        return [.. (await Task.WhenAll(asks).ConfigureAwait(false)).Where(pid => pid != 0)];
    }

    private static readonly TimeSpan ConfirmTimeout = TimeSpan.FromSeconds(30);

    /// <summary>
    /// A kernel whose Landlock has no network rules (ABI &lt; 4) cannot hold TCP to the listed ports: said once per
    /// start and reload, per pool that lists any, rather than silently running unrestricted.
    /// </summary>
    private void WarnAboutLandlock()
    {
        var abi = Landlock.AbiVersion();
        if (abi >= Landlock.NetworkAbi)
            return;
        foreach (var pool in _config.Pools.Values)
        {
            var ports = LandlockRules.ConnectPorts(pool, _config.Vhosts.Values.Where(v => v.ServedBy(pool.Name)));
            if (ports.Count > 0 && Landlock.NetworkWarning(abi, ports) is { } warning)
                _log.Warning("Pool {Pool}: {Warning}", pool.Name, warning);
        }

        _log.Warning("Landlock ABI {Abi}: no process's TCP bind or connect is restricted by Landlock on this kernel (needs ABI {Needed})", abi, Landlock.NetworkAbi);
    }
}
