using System.Collections.Concurrent;
using Dispatch.Worker.Http;

namespace Dispatch.Worker.FastCgi;

/// <summary>
/// The php-fpm processes of this worker (one per vhost with <c>fastcgi.spawn</c>), and the one thread that spawns them:
/// <c>PR_SET_PDEATHSIG</c> fires when the spawning <i>thread</i> ends, so it must be a thread that lives as long as the
/// worker, never a thread-pool thread.
/// </summary>
internal sealed class PhpFpmSupervisors(Serilog.ILogger log) : IAsyncDisposable
{
    private readonly Dictionary<string, PhpFpmSupervisor> _byVhost = new(StringComparer.OrdinalIgnoreCase);
    private readonly BlockingCollection<(Func<CgiProcess> Start, TaskCompletionSource<CgiProcess> Done)> _requests = [];
    private Thread? _thread;

    /// <summary>The socket of <paramref name="vhost"/>'s php-fpm, or null when it has none (a configured socket is used).</summary>
    public string? SocketFor(Vhost vhost) => _byVhost.TryGetValue(vhost.Name, out var supervisor) ? supervisor.SocketPath : null;

    /// <summary>The supervisor of a vhost (tests).</summary>
    internal PhpFpmSupervisor? For(string vhost) => _byVhost.GetValueOrDefault(vhost);

    /// <summary>Starts php-fpm for every vhost that asks for one and waits until each accepts connections.</summary>
    public async Task StartAsync(IEnumerable<Vhost> vhosts, FastCgiHandler handler, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(vhosts);
        ArgumentNullException.ThrowIfNull(handler);
        var index = 0;
        foreach (var vhost in vhosts)
        {
            if (vhost.Settings.FastCgi is not { Spawn: { } spawn } settings)
            {
                continue;
            }

            var supervisor = new PhpFpmSupervisor(vhost.Name, spawn, vhost.ErrorLog ?? log, SpawnAsync, index++);
            _byVhost[vhost.Name] = supervisor;
            supervisor.Pool = handler.PoolFor(supervisor.SocketPath, settings.EffectiveConnectTimeout(), spawn.MaxChildren);
            await supervisor.StartAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var supervisor in _byVhost.Values)
        {
            await supervisor.DisposeAsync().ConfigureAwait(false);
        }

        _byVhost.Clear();
        _requests.CompleteAdding();
        _thread?.Join();
        _requests.Dispose();
    }

    private Task<CgiProcess> SpawnAsync(Func<CgiProcess> start)
    {
        lock (_requests)
        {
            if (_thread is null)
            {
                _thread = new Thread(Run) { IsBackground = true, Name = "php-fpm spawner" };
                _thread.Start();
            }
        }

        var done = new TaskCompletionSource<CgiProcess>(TaskCreationOptions.RunContinuationsAsynchronously);
        _requests.Add((start, done));
        return done.Task;
    }

    private void Run()
    {
        foreach (var (start, done) in _requests.GetConsumingEnumerable())
        {
            try
            {
                done.TrySetResult(start());
            }
            catch (Exception e)
            {
                done.TrySetException(e);
            }
        }
    }
}
