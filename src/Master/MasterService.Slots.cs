using Dispatch.Master.Children;
using Dispatch.Master.Config;
using Dispatch.Master.Files;
using Dispatch.Protocol.Hosting;
using Dispatch.Protocol.Interop;
using Dispatch.Protocol.Routing;
using Dispatch.Protocol.Wire;

namespace Dispatch.Master;

/// <summary>
/// Dispatcher slots: each slot's dispatcher served, restarted when it dies, and replaced by an upgrade (the old one
/// drains its open connections).
/// </summary>
internal sealed partial class MasterService
{
    /// <summary>
    /// Serves one dispatcher slot: its channel until it ends; a dispatcher that dies is restarted with
    /// the same listening sockets (connections queued meanwhile wait in them), at most 5 times a minute.
    /// An upgrade puts a new dispatcher in the slot: the loop serves the new one from then on, and the
    /// old one's channel is served until it has drained.
    /// </summary>
    private async Task ServeSlotAsync(int slot)
    {
        var restarts = new Queue<long>();
        var dispatcher = _dispatchers[slot]!;
        TopUpSpares(dispatcher);
        var serve = ServeDispatcherAsync(dispatcher);
        while (true)
        {
            Task changed;
            lock (_gate)
                changed = _slotChanged[slot].Task;
            if (await Task.WhenAny(serve, changed).ConfigureAwait(false) == changed)
            {
                lock (_gate)
                {
                    _slotChanged[slot] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    if (_dispatchers[slot] == dispatcher)
                        continue;
                }

                _ = RetireDispatcherAsync(dispatcher, serve);
                dispatcher = _dispatchers[slot]!;
                TopUpSpares(dispatcher);
                serve = ServeDispatcherAsync(dispatcher);
                continue;
            }

            if (_stop.IsCancellationRequested)
                return;
            dispatcher.Kill();
            await Task.WhenAny(dispatcher.Exited, Task.Delay(5000)).ConfigureAwait(false);
            var now = Environment.TickCount64;
            restarts.Enqueue(now);
            while (restarts.Count > 0 && now - restarts.Peek() > 60_000)
                restarts.Dequeue();
            if (restarts.Count > 5)
            {
                _log.Fatal("Dispatcher slot {Slot} died {Count} times within a minute; stopping", slot, restarts.Count);
                _exitCode = 1;
                _stop.Cancel();
                return;
            }

            try
            {
                ChildProcess fresh;
                await _reloading.WaitAsync().ConfigureAwait(false); // the snapshot it gets is the one in force
                try
                {
                    fresh = await StartDispatcherAsync(slot, _stop.Token).ConfigureAwait(false);
                }
                finally
                {
                    _reloading.Release();
                }

                bool adopted;
                lock (_gate)
                {
                    adopted = _dispatchers[slot] == dispatcher;
                    if (adopted)
                        _dispatchers[slot] = fresh;
                }

                if (!adopted)
                {
                    // An upgrade put a dispatcher in this slot meanwhile: keep that one, not this restart.
                    _log.Warning("Dispatcher {Fresh} not needed: an upgrade replaced the dead {Old} meanwhile", fresh.Pid, dispatcher.Pid);
                    fresh.Kill();
                    lock (_gate)
                        _slotChanged[slot] = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    _ = RetireDispatcherAsync(dispatcher, serve);
                    dispatcher = _dispatchers[slot]!;
                    TopUpSpares(dispatcher);
                    serve = ServeDispatcherAsync(dispatcher);
                    continue;
                }

                _counters.Add("dispatch_dispatcher_restarts_total");
                _log.Warning("Dispatcher {Old} ({Status}) replaced by dispatcher {New} on the same listening sockets", dispatcher.Pid, dispatcher.Exited.IsCompleted ? ChildProcess.DescribeStatus(dispatcher.Exited.Result) : "killed", fresh.Pid);
                ForgetDispatcher(dispatcher);
                if (dispatcher.Exited.IsCompleted)
                    dispatcher.Dispose();
                dispatcher = fresh;
                TopUpSpares(dispatcher);
                serve = ServeDispatcherAsync(dispatcher);
            }
            catch (Exception e) when (e is ChildStartException or SysCallException)
            {
                _log.Fatal("Could not restart dispatcher slot {Slot}: {Reason}", slot, e.Message);
                _exitCode = 1;
                _stop.Cancel();
                return;
            }
        }
    }

    /// <summary>
    /// SIGUSR2 (or the control command): upgrade without dropping a connection. For each slot, a new
    /// dispatcher starts from the binaries installed now, on the same listening sockets (the master
    /// holds them, so connections queued in them wait for whichever process accepts first); once it
    /// is ready, the old one stops accepting and its workers and it finish what they have within
    /// <c>dispatcher.stopGrace</c>. New workers start from the installed binaries too. If a new
    /// dispatcher cannot start, the old ones keep serving.
    /// </summary>
    public async Task<string> UpgradeAsync(string why)
    {
        if (!await _upgrading.WaitAsync(0).ConfigureAwait(false))
        {
            _log.Warning("Upgrade ({Why}) ignored: an upgrade is already in progress", why);
            return "an upgrade is already in progress";
        }

        var reloadHeld = false;
        try
        {
            var unsafePath = PathSafety.CheckRootOwned(RuntimePaths.AppDirectory);
            if (unsafePath is not null)
            {
                _log.Error("Upgrade ({Why}) refused: {AppDirectory}: {Reason}; the running processes keep serving", why, RuntimePaths.AppDirectory, unsafePath);
                return $"refused: {unsafePath}";
            }

            if (await ProbeProtocolAsync().ConfigureAwait(false) is { } mismatch)
            {
                _log.Error("Upgrade ({Why}) refused: {Reason}; the running dispatchers keep serving", why, mismatch);
                _counters.Add("dispatch_upgrades_total{result=\"refused\"}");
                return $"refused: {mismatch}";
            }

            _log.Information("Upgrade ({Why}): starting new dispatchers from {AppDirectory}", why, RuntimePaths.AppDirectory);
            // No reload in between: each new dispatcher must start with the routes in force when it takes over.
            await _reloading.WaitAsync().ConfigureAwait(false);
            reloadHeld = true;
            var replaced = new List<string>();
            for (var slot = 0; slot < _dispatchers.Length; slot++)
            {
                var fresh = await StartDispatcherAsync(slot, _stop.Token).ConfigureAwait(false);
                ChildProcess old;
                TaskCompletionSource changed;
                lock (_gate)
                {
                    old = _dispatchers[slot]!;
                    _dispatchers[slot] = fresh;
                    _retiring.Add(old);
                    changed = _slotChanged[slot];
                }

                changed.TrySetResult();
                replaced.Add($"{old.Pid} -> {fresh.Pid}");
            }

            _log.Information("Upgrade ({Why}) complete: dispatchers {Replaced}; the old ones drain", why, string.Join(", ", replaced));
            _counters.Add("dispatch_upgrades_total{result=\"ok\"}");
            return $"upgraded: dispatchers {string.Join(", ", replaced)}";
        }
        catch (Exception e) when (e is ChildStartException or OperationCanceledException or SysCallException or WireException)
        {
            _log.Error("Upgrade ({Why}) failed, the running dispatchers keep serving: {Reason}", why, e.Message);
            _counters.Add("dispatch_upgrades_total{result=\"failed\"}");
            return $"failed: {e.Message}";
        }
        finally
        {
            if (reloadHeld)
                _reloading.Release();
            _upgrading.Release();
        }
    }

    /// <summary>
    /// The installed binaries' protocol version, read from the stamp in the installed binaries (ProtocolStamp):
    /// null when it matches this master's, else why not. A master cannot talk to children of
    /// another protocol version, so such an upgrade needs a restart of the master.
    /// </summary>
    private static Task<string?> ProbeProtocolAsync()
    {
        // Read from the installed files (IpcChannel.Version, a constant stamped into them), not by
        // running anything: the master's reaper owns every child's exit status.
        var path = ProtocolStamp.CarrierIn(RuntimePaths.AppDirectory);
        try
        {
            var theirs = ProtocolStamp.Read(path);
            return Task.FromResult<string?>(theirs == IpcChannel.Version ? null
                : $"the installed binaries speak protocol {(theirs is null ? "(unknown)" : theirs.Value.ToString(System.Globalization.CultureInfo.InvariantCulture))} and this master {IpcChannel.Version}: restart the master to run them (systemctl restart dispatch)");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return Task.FromResult<string?>($"could not read the protocol version of {path}: {e.Message}");
        }
    }

    /// <summary>An upgraded-away dispatcher: it and its workers stop accepting and finish within the grace period.</summary>
    private async Task RetireDispatcherAsync(ChildProcess old, Task serve)
    {
        var grace = _config.Dispatcher.StopGrace;
        void Stop(ChildProcess c, TimeSpan left)
        {
            try
            {
                c.Channel.Send(new Stop((uint)Math.Max(0, left.TotalMilliseconds), Final: false));
            }
            catch (Exception e) when (e is SysCallException or ObjectDisposedException)
            {
            }
        }

        Stop(old, grace);
        // Its workers are told later: connections it accepted just before the switch are still reading
        // their request head or ClientHello, and are handed to those workers when they finish. After
        // the longest a prelude may take, the workers finish what they have (and close idle keep-alive
        // connections, which lets the old dispatcher's proxied TLS connections end).
        var d = _config.Dispatcher;
        var prelude = TimeSpan.FromMilliseconds(Math.Max(d.HeaderTimeout.TotalMilliseconds, d.HandshakeTimeout.TotalMilliseconds)) + TimeSpan.FromSeconds(1);
        var delay = prelude < grace ? prelude : grace;
        var workersStopped = Task.Delay(delay).ContinueWith(
            _ =>
            {
                List<ChildProcess> workers;
                lock (_gate)
                    workers = [.. _workers.Values.Where(w => _ownerOf.GetValueOrDefault(w.Pid) == old)];
                foreach (var w in workers)
                    Stop(w, grace - delay);
            },
            TaskScheduler.Default);

        // Its channel is served until it closes: connections it accepted before the switch may still need workers.
        var drained = Task.WhenAll(serve, old.Exited);
        if (await Task.WhenAny(drained, Task.Delay(grace + TimeSpan.FromSeconds(2))).ConfigureAwait(false) != drained && !old.Exited.IsCompleted)
        {
            _log.Warning("{Child} did not drain within {Grace}; killing it", old, grace);
            old.Kill();
        }

        await old.Exited.ConfigureAwait(false);
        await workersStopped.ConfigureAwait(false);
        lock (_gate)
            _retiring.Remove(old);
        _log.Information("Dispatcher {Pid} drained and exited ({Status})", old.Pid, ChildProcess.DescribeStatus(old.Exited.Result));
        ForgetDispatcher(old);
        old.Dispose();
    }
}
