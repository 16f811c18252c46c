using Dispatch.Master.Children;
using Dispatch.Master.Config;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Serilog;

namespace Dispatch.Master.Files;

/// <summary>
/// A worker's access and error logs: opened by the master (root, safe walk: <see cref="TenantLogs"/>) and handed to the
/// worker as descriptors, at its start and on every reopen (SIGUSR1, logrotate).
/// </summary>
internal static class WorkerLogFiles
{
    /// <summary>The vhosts' access logs, then their error logs, in batches of at most one message's descriptors.</summary>
    public static List<(bool Errors, VhostConfig[] Vhosts)> Batches(IEnumerable<VhostConfig> vhosts) =>
    [
        .. vhosts.Where(v => v.AccessLog is not null).Chunk(IpcChannel.MaxDescriptors).Select(b => (false, b)),
        .. vhosts.Where(v => v.ErrorLog is not null).Chunk(IpcChannel.MaxDescriptors).Select(b => (true, b)),
    ];

    /// <summary>
    /// Opens the vhosts' access and error logs and hands the descriptors to the worker: LogFiles for access logs,
    /// ErrorLogFiles for error logs, each naming its vhosts.
    /// </summary>
    public static void Send(ChildProcess worker, PoolConfig pool, IEnumerable<(bool Errors, VhostConfig[] Vhosts)> batches)
    {
        foreach (var (errors, batch) in batches)
        {
            var fds = new List<int>();
            try
            {
                foreach (var v in batch)
                    fds.Add(TenantLogs.Open(errors ? v.ErrorLog! : v.AccessLog!, pool.Gid));
                string[] names = [.. batch.Select(v => v.Name)];
                if (errors)
                    worker.Channel.Send(new ErrorLogFiles(names), [.. fds]);
                else
                    worker.Channel.Send(new LogFiles(names), [.. fds]);
            }
            finally
            {
                foreach (var fd in fds)
                    Libc.Close(fd);
            }
        }
    }

    /// <summary>SIGUSR1 (logrotate): reopen every access and error log and hand the new descriptors to the running workers.</summary>
    public static void Reopen(IReadOnlyCollection<ChildProcess> workers, DispatchConfig config, ILogger log)
    {
        foreach (var w in workers)
        {
            if (!config.Pools.TryGetValue(w.Name, out var pool))
                continue;
            try
            {
                Send(w, pool, Batches(config.Vhosts.Values.Where(v => v.ServedBy(pool.Name))));
            }
            catch (Exception e) when (e is IOException or SysCallException)
            {
                log.Error("Could not reopen the logs of worker {Pid} (pool {Pool}): {Reason}", w.Pid, w.Name, e.Message);
            }
        }

        log.Information("Access and error logs reopened for {Workers} workers", workers.Count);
    }
}
