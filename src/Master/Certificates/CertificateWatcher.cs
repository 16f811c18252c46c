using Dispatch.Master.Config;
using Serilog;

namespace Dispatch.Master.Certificates;

/// <summary>
/// Watches every terminated vhost's certificate directory (certbot swaps the live/ symlinks on renewal): a change
/// reloads (debounced by 500 ms), so new handshakes get the new certificate and open connections keep theirs.
/// Certificates expiring within 30 days are warned about each time the set is watched (start and reload).
/// </summary>
internal sealed class CertificateWatcher(ILogger log, Action reload) : IDisposable
{
    private readonly Dictionary<string, FileSystemWatcher> _watchers = new(StringComparer.Ordinal);
    private Timer? _debounce;

    /// <summary>Watches the directories of <paramref name="config"/>'s certificates (and no others).</summary>
    public void Watch(DispatchConfig config)
    {
        var dirs = config.Vhosts.Values.SelectMany(v => v.Certificates).Select(c => c.Directory).ToHashSet(StringComparer.Ordinal);
        lock (_watchers)
        {
            foreach (var gone in _watchers.Keys.Where(k => !dirs.Contains(k)).ToList())
            {
                _watchers[gone].Dispose();
                _watchers.Remove(gone);
            }

            foreach (var dir in dirs.Where(d => !_watchers.ContainsKey(d)))
            {
                var w = new FileSystemWatcher(dir) { NotifyFilter = NotifyFilters.FileName | NotifyFilters.LastWrite | NotifyFilters.Size | NotifyFilters.CreationTime };
                FileSystemEventHandler changed = (_, _) =>
                {
                    var t = new Timer(_ => reload(), null, Timeout.Infinite, Timeout.Infinite);
                    Interlocked.Exchange(ref _debounce, t)?.Dispose();
                    t.Change(500, Timeout.Infinite);
                };
                w.Changed += changed;
                w.Created += changed;
                w.Renamed += (s, e) => changed(s, e);
                w.EnableRaisingEvents = true;
                _watchers[dir] = w;
            }
        }

        foreach (var (vhost, cert) in config.Vhosts.Values.SelectMany(v => v.Certificates.Select(c => (v.Name, c))))
        {
            var days = (cert.NotAfter - DateTime.UtcNow).TotalDays;
            if (days < 30)
                log.Warning("Certificate of {Vhost} in {Directory} expires in {Days:F0} days ({NotAfter:u})", vhost, cert.Directory, days, cert.NotAfter);
        }
    }

    public void Dispose()
    {
        lock (_watchers)
        {
            foreach (var w in _watchers.Values)
                w.Dispose();
            _watchers.Clear();
        }

        _debounce?.Dispose();
    }
}
