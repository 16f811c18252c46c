using Dispatch.Protocol.Interop;
using Dispatch.Protocol.Wire;
using Serilog;

namespace Dispatch.TlsDispatcher.Workers;

/// <summary>A worker the dispatcher may hand connections to, through its channel.</summary>
internal sealed class WorkerLink : IDisposable
{
    public WorkerLink(string pool, int id, int pid, IpcChannel channel)
    {
        Pool = pool;
        Id = id;
        Pid = pid;
        Channel = channel;
    }

    public string Pool { get; }

    public int Id { get; }

    public int Pid { get; }

    public IpcChannel Channel { get; }

    /// <summary>Open connections, as the worker last reported, plus those handed since.</summary>
    public int Load;

    public bool Gone { get; set; }

    public void Dispose() => Channel.Dispose();
}

/// <summary>
/// The dispatcher's view of the workers: per pool, the live workers and at most one request for a
/// new one in flight. Workers are asked for by pool name only; the master decides everything else.
/// </summary>
internal sealed class WorkerPools
{
    private readonly IpcChannel _master;
    private readonly ILogger _log;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, List<WorkerLink>> _pools = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Pending> _pending = new(StringComparer.Ordinal);
    private readonly Dictionary<int, WorkerLink> _byId = [];
    private ulong _nextRequest;

    public WorkerPools(IpcChannel master, ILogger log)
    {
        _master = master;
        _log = log;
    }

    private sealed record Pending(ulong RequestId, TaskCompletionSource<WorkerLink?> Completion);

    /// <summary>A worker of <paramref name="pool"/> with the fewest connections; asks the master if there is none.</summary>
    public async Task<WorkerLink?> AcquireAsync(string pool, CancellationToken cancellationToken)
    {
        Task<WorkerLink?> wait;
        lock (_gate)
        {
            if (_pools.TryGetValue(pool, out var workers) && workers.Count > 0)
            {
                var best = workers[0];
                foreach (var w in workers)
                {
                    if (w.Load < best.Load)
                        best = w;
                }

                Interlocked.Increment(ref best.Load);
                return best;
            }

            if (!_pending.TryGetValue(pool, out var pending))
            {
                pending = new Pending(++_nextRequest, new TaskCompletionSource<WorkerLink?>(TaskCreationOptions.RunContinuationsAsynchronously));
                _pending[pool] = pending;
                _master.Send(new NeedWorker(pending.RequestId, pool));
            }

            wait = pending.Completion.Task;
        }

        var link = await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
        if (link is not null)
            Interlocked.Increment(ref link.Load);
        return link;
    }

    /// <summary>
    /// Passes <paramref name="fd"/> with <paramref name="meta"/> to a worker of <paramref name="pool"/>,
    /// waiting up to the configured time for one; a worker whose channel fails is dropped and the next
    /// one tried. False when no worker could take it (the caller still owns the descriptor).
    /// </summary>
    public async Task<bool> HandOffAsync(string pool, Connection meta, int fd, Dispatch.Protocol.Routing.DispatcherSettings settings)
    {
        using var wait = new CancellationTokenSource(settings.WorkerWaitMs);
        while (true)
        {
            WorkerLink? worker;
            try
            {
                worker = await AcquireAsync(pool, wait.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return false;
            }

            if (worker is null)
                return false;
            try
            {
                worker.Channel.Send(meta, [fd]);
                return true;
            }
            catch (Exception e) when (e is SysCallException or ObjectDisposedException)
            {
                Drop(worker, $"hand-off failed: {e.Message}");
            }
        }
    }

    public void OnWorkerReady(WorkerReady ready, int fd)
    {
        var link = new WorkerLink(ready.Pool, ready.WorkerId, ready.Pid, IpcChannel.FromDescriptor(fd, $"worker {ready.Pid} ({ready.Pool})"));
        Pending? pending;
        lock (_gate)
        {
            if (!_pools.TryGetValue(ready.Pool, out var workers))
                _pools[ready.Pool] = workers = [];
            workers.Add(link);
            _byId[link.Id] = link;
            if (_pending.TryGetValue(ready.Pool, out pending) && pending.RequestId == ready.RequestId)
                _pending.Remove(ready.Pool);
            else
                pending = null;
        }

        _log.Information("Worker {Pid} of pool {Pool} joined", ready.Pid, ready.Pool);
        _ = WatchAsync(link);
        pending?.Completion.TrySetResult(link);
    }

    public void OnRefused(WorkerRefused refused)
    {
        Pending? pending;
        lock (_gate)
        {
            if (_pending.TryGetValue(refused.Pool, out pending) && pending.RequestId == refused.RequestId)
                _pending.Remove(refused.Pool);
            else
                pending = null;
        }

        _log.Warning("No worker for pool {Pool}: {Reason}", refused.Pool, refused.Reason);
        pending?.Completion.TrySetResult(null);
    }

    public void OnGone(WorkerGone gone)
    {
        WorkerLink? link;
        lock (_gate)
            _byId.TryGetValue(gone.WorkerId, out link);
        if (link is not null)
            Drop(link, gone.Reason);
    }

    /// <summary>Removes a worker that exited or whose channel failed.</summary>
    public void Drop(WorkerLink link, string reason)
    {
        lock (_gate)
        {
            if (link.Gone)
                return;
            link.Gone = true;
            _byId.Remove(link.Id);
            if (_pools.TryGetValue(link.Pool, out var workers))
                workers.Remove(link);
        }

        _log.Information("Worker {Pid} of pool {Pool} left: {Reason}", link.Pid, link.Pool, reason);
        link.Dispose();
    }

    /// <summary>A worker may only report its load; anything else, or a malformed message, drops it.</summary>
    private async Task WatchAsync(WorkerLink link)
    {
        try
        {
            while (await link.Channel.ReceiveAsync().ConfigureAwait(false) is { } message)
            {
                using (message)
                {
                    if (message.Type != MessageType.WorkerLoad)
                        throw new WireException($"worker may not send {message.Type}");
                    link.Load = (int)Math.Min(message.Decode<WorkerLoad>().OpenConnections, int.MaxValue);
                }
            }

            Drop(link, "channel closed");
        }
        catch (Exception e) when (e is WireException or SysCallException or ObjectDisposedException)
        {
            Drop(link, $"protocol violation: {e.Message}");
        }
    }
}
