using System.Diagnostics;
using Dispatch.Master.Children;
using Dispatch.Master.Operations;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Dispatch.Wire.Payloads;
using Serilog;

namespace Dispatch.Master.Config;

/// <summary>
/// Reload: the config is read and checked in full (<see cref="ConfigLoader.Load"/>, as <c>check</c> and <c>run</c> do),
/// compared with the running one (<see cref="ReloadDecision"/>), and swapped in; dispatchers confirm the new routes.
/// One reload at a time; while one runs, no dispatcher starts (<see cref="WithoutReloadAsync"/>), so that each gets
/// the routes in force.
/// </summary>
internal sealed class Reloader(
    RunningConfig config, PoolCgroups cgroups, SpawnBackoff backoff, DispatcherReports reports, StatusReport status,
    Func<IReadOnlyList<ChildProcess>> dispatchers, Action<DispatchConfig> applied, ILogger log) : IDisposable
{
    private static readonly TimeSpan ConfirmTimeout = TimeSpan.FromSeconds(30);
    private readonly SemaphoreSlim _reloading = new(1, 1);

    /// <summary>Runs <paramref name="action"/> with no reload under way, and none starting until it ends.</summary>
    public async Task<T> WithoutReloadAsync<T>(Func<Task<T>> action)
    {
        await _reloading.WaitAsync().ConfigureAwait(false);
        try
        {
            return await action().ConfigureAwait(false);
        }
        finally
        {
            _reloading.Release();
        }
    }

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
            var old = config.Current;
            var (fresh, errors) = ConfigLoader.Load(old.SourcePath);
            if (fresh is null)
            {
                foreach (var e in errors)
                    log.Error("Reload ({Why}) rejected, the last good configuration keeps serving: {Error}", why, e.ToString());
                var detail = ReloadDecision.Invalid(why, errors);
                status.RecordReload("rejected", detail);
                return detail;
            }

            if (ReloadDecision.Rejection(old, fresh) is { } rejection)
            {
                log.Error("Reload ({Why}) rejected: changes to listen, dispatcher, control or metrics need a restart; the last good configuration keeps serving", why);
                status.RecordReload("rejected", $"rejected ({why}): {rejection}");
                return $"rejected: {rejection}";
            }

            // Limits change in place (the pool's workers stay); a pool that gains or loses its group is retired below.
            cgroups.Apply(fresh);
            var retired = ReloadDecision.Retired(old, fresh);
            foreach (var pool in backoff.Clear(retired))
                log.Information("Pool {Pool} changed in the reload: its start backoff is cleared", pool);
            var version = config.Replace(fresh);
            var memfd = SealedBlob.Create("dispatch-routes", SnapshotJson.Serialize(Projections.Snapshot(fresh, version)));
            List<ChildProcess> updated = [.. dispatchers()];
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
            log.Information(
                "Configuration reloaded ({Why}), version {Version}: {Vhosts} vhosts in {Pools} pools; vhosts added {Added}, removed {Removed}, changed {Changed}; workers retired for {Retired}{Included}; in {Elapsed:F0} ms{Unconfirmed}",
                why, version, fresh.Vhosts.Count, fresh.Pools.Count, added, removed, changed, ReloadDecision.RetiredText(retired), fresh.Included is null ? string.Empty : $"; include {fresh.Included}", clock.Elapsed.TotalMilliseconds,
                unconfirmed.Count == 0 ? string.Empty : $"; NOT yet confirmed by dispatcher {string.Join(", ", unconfirmed)}");
            applied(fresh);
            var summary = ReloadDecision.Summary(version, why, fresh, retired);
            status.RecordReload("ok", summary);
            return "reloaded: " + summary;
        }
        catch (Exception e) when (e is SysCallException or WireException or IOException)
        {
            log.Error("Reload ({Why}) failed: {Reason}", why, e.Message);
            status.RecordReload("failed", $"failed ({why}): {e.Message}");
            return "failed: " + e.Message;
        }
        finally
        {
            _reloading.Release();
        }
    }

    public void Dispose() => _reloading.Dispose();

    /// <summary>The dispatchers (pids) that neither confirmed what was sent to them within <see cref="ConfirmTimeout"/> nor exited.</summary>
    private async Task<List<int>> UnconfirmedAsync(IEnumerable<ChildProcess> sent)
    {
        var asks = sent.Select(async d =>
        {
            try
            {
                var ask = reports.AskAsync(d, ConfirmTimeout);
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
}
