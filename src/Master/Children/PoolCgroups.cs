using Dispatch.Master.Config;
using Dispatch.Platform.Cgroups;
using Serilog;

namespace Dispatch.Master.Children;

/// <summary>
/// The master's side of per-pool cgroups: creates and limits each pool's group when a config is
/// applied (start, reload), gives each worker's stage 1 the cgroup.procs files to join, removes the
/// groups of pools that went away once their last worker has left, and all of them at exit.
/// </summary>
internal sealed class PoolCgroups
{
    private readonly ILogger _log;
    private readonly CgroupHost _host = CgroupHost.Detect();
    private readonly Lock _gate = new();
    private readonly Dictionary<string, string[]> _procs = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _failed = new(StringComparer.Ordinal);
    private readonly List<(CgroupTree Tree, string Pool)> _stale = [];
    private readonly List<CgroupTree> _trees = [];
    private CgroupTree? _tree;
    private string? _root;
    private bool _required;

    public PoolCgroups(ILogger log) => _log = log;

    /// <summary>
    /// Applies the config's cgroup limits. False when a group could not be set up and
    /// <c>cgroup:required</c> is true (the caller decides whether that is fatal).
    /// </summary>
    public bool Apply(DispatchConfig config)
    {
        lock (_gate)
        {
            var wanted = config.Pools.Values.Where(p => p.Cgroup is not null).ToList();
            if (_tree is not null && _root != config.Cgroup.Root)
            {
                _stale.AddRange(_procs.Keys.Select(p => (_tree, p)));
                _procs.Clear();
                _tree = null;
            }

            foreach (var gone in _procs.Keys.Where(p => !wanted.Any(w => w.Name == p)).ToList())
            {
                _stale.Add((_tree!, gone));
                _procs.Remove(gone);
            }

            _failed.Clear();
            _required = config.Cgroup.Required;
            if (wanted.Count == 0)
            {
                RemoveStale();
                return true;
            }

            if (_tree is null)
            {
                _tree = new CgroupTree(_host, config.Cgroup.Root);
                _root = config.Cgroup.Root;
                _trees.Add(_tree);
                _log.Information("Cgroups: {Hierarchies}", _host.ToString());
            }

            // A pool that went away and came back keeps (re-limits) its group.
            _stale.RemoveAll(s => s.Tree == _tree && wanted.Any(w => w.Name == s.Pool));

            foreach (var (path, reason) in Cgroups.Unavailable(wanted, _host))
                _log.Warning("{Path}: {Reason}; this limit is not applied", path, reason);
            var ok = true;
            foreach (var pool in wanted)
            {
                try
                {
                    _procs[pool.Name] = _tree.Apply(pool.Name, pool.Cgroup!);
                    _log.Information("Pool {Pool}: cgroup {Groups} with {Limits}", pool.Name, string.Join(", ", _tree.Directories(pool.Name)), pool.Cgroup!.ToString());
                }
                catch (Exception e) when (e is CgroupException or IOException or UnauthorizedAccessException)
                {
                    _procs.Remove(pool.Name);
                    _failed[pool.Name] = e.Message;
                    if (_required)
                        _log.Error("Pool {Pool}: its cgroup could not be set up and cgroup:required is true, so it gets no worker: {Reason}", pool.Name, e.Message);
                    else
                        _log.Warning("Pool {Pool}: its cgroup could not be set up; its workers run without cgroup limits: {Reason}", pool.Name, e.Message);
                    ok = false;
                }
            }

            RemoveStale();
            return ok || !_required;
        }
    }

    /// <summary>The cgroup.procs files a new worker of <paramref name="pool"/> joins in stage 1 (empty: none).</summary>
    public string[] ProcsFor(PoolConfig pool)
    {
        lock (_gate)
        {
            if (_procs.TryGetValue(pool.Name, out var procs))
                return procs;
            if (_required && _failed.TryGetValue(pool.Name, out var why))
                throw new ChildStartException($"pool '{pool.Name}' has no cgroup ({why}) and cgroup:required is true");
            return [];
        }
    }

    /// <summary>Removes the groups of pools that went away, once empty (called when a worker exits).</summary>
    public void RemoveStale()
    {
        lock (_gate)
        {
            foreach (var (tree, pool) in _stale.ToList())
            {
                if (tree.TryRemove(pool, out _))
                {
                    _stale.Remove((tree, pool));
                    _log.Information("Cgroup of pool {Pool} removed", pool);
                }
            }
        }
    }

    /// <summary>At exit, after every child has gone: every group, then the directories created on the way.</summary>
    public void RemoveAll()
    {
        lock (_gate)
        {
            if (_tree is not null)
                _stale.AddRange(_procs.Keys.Select(p => (_tree, p)));
            _procs.Clear();
            foreach (var (tree, pool) in _stale)
            {
                if (!tree.TryRemove(pool, out var why))
                    _log.Warning("Cgroup of pool {Pool} left in place: {Reason}", pool, why);
            }

            _stale.Clear();
            foreach (var tree in _trees)
                tree.RemoveCreatedRoots();
        }
    }
}
