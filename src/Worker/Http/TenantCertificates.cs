using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Dispatch.Wire.Payloads;

namespace Dispatch.Worker.Http;

/// <summary>
/// Passthrough vhosts: the tenant's own certificates, loaded by the worker as the tenant from the
/// tenant's directory (certbot layout: fullchain.pem, privkey.pem), checked (key matches, valid
/// now), and reloaded when the files change — the old certificate keeps serving if the new one is
/// bad. The master and the dispatcher never open these files.
/// </summary>
internal sealed class TenantCertificates : IDisposable
{
    private static readonly TimeSpan CheckEvery = TimeSpan.FromSeconds(2);
    private readonly HostMatcher<Entry> _names = new();
    private readonly List<Entry> _entries = [];
    private readonly Serilog.ILogger _log;

    public TenantCertificates(IEnumerable<Dispatch.Wire.Payloads.WorkerVhost> vhosts, Serilog.ILogger log)
    {
        _log = log;
        foreach (var v in vhosts.Where(v => v.PassthroughCertDir is not null))
        {
            var entry = new Entry(v.Name, v.PassthroughCertDir!);
            _entries.Add(entry);
            _names.TryAdd(v.Name, entry);
            foreach (var a in v.Aliases)
                _names.TryAdd(a, entry);
            Reload(entry, initial: true);
        }
    }

    public bool Any => _entries.Count > 0;

    /// <summary>The TLS options for a ClientHello's server name (reloading the certificate first if its files changed).</summary>
    public SslServerAuthenticationOptions? OptionsFor(string? serverName)
    {
        var entry = serverName is null ? (_entries.Count == 1 ? _entries[0] : null) : _names.Match(HostNames.Normalize(serverName));
        if (entry is null)
            return null;
        if (DateTime.UtcNow - entry.LastCheck > CheckEvery)
            Reload(entry, initial: false);
        return entry.Options;
    }

    private void Reload(Entry entry, bool initial)
    {
        entry.LastCheck = DateTime.UtcNow;
        var chainPath = Path.Combine(entry.Directory, "fullchain.pem");
        var keyPath = Path.Combine(entry.Directory, "privkey.pem");
        try
        {
            var stamp = Stamp(chainPath) + "|" + Stamp(keyPath);
            if (stamp == entry.Stamp)
                return;
            var chainPem = File.ReadAllText(chainPath);
            var leaf = X509Certificate2.CreateFromPem(chainPem, File.ReadAllText(keyPath));
            var now = DateTime.UtcNow;
            if (leaf.NotAfter.ToUniversalTime() < now || leaf.NotBefore.ToUniversalTime() > now)
            {
                var when = leaf.NotAfter.ToUniversalTime();
                leaf.Dispose();
                throw new CryptographicException($"the certificate is not valid now (valid until {when:u})");
            }

            var all = new X509Certificate2Collection();
            all.ImportFromPem(chainPem);
            var intermediates = new X509Certificate2Collection();
            foreach (var c in all.Skip(1))
                intermediates.Add(c);
            entry.Options = new SslServerAuthenticationOptions
            {
                ServerCertificateContext = SslStreamCertificateContext.Create(leaf, intermediates, offline: true),
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ClientCertificateRequired = false,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                AllowRenegotiation = false,
                ApplicationProtocols = [SslApplicationProtocol.Http2, SslApplicationProtocol.Http11],
            };
            entry.Stamp = stamp;
            _log.Information(
                "{Action} certificate for {Vhost} from {Directory}: serial {Serial}, valid until {NotAfter:u}",
                initial ? "Loaded" : "Reloaded", entry.Name, entry.Directory, leaf.SerialNumber, leaf.NotAfter.ToUniversalTime());
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
        {
            _log.Error(
                "Certificate for {Vhost} in {Directory} cannot be used{Keeping}: {Reason}",
                entry.Name, entry.Directory, entry.Options is null ? string.Empty : " (the previous one keeps serving)", e.Message);
        }
    }

    private static string Stamp(string path)
    {
        var info = new FileInfo(path);
        var target = info.LinkTarget is null ? info : (FileInfo?)info.ResolveLinkTarget(returnFinalTarget: true) ?? info;
        return $"{target.FullName}:{target.LastWriteTimeUtc.Ticks}:{target.Length}";
    }

    public void Dispose()
    {
        foreach (var e in _entries)
            e.Options?.ServerCertificateContext?.TargetCertificate.Dispose();
    }

    private sealed class Entry(string name, string directory)
    {
        public string Name { get; } = name;

        public string Directory { get; } = directory;

        public string? Stamp { get; set; }

        public DateTime LastCheck { get; set; }

        public SslServerAuthenticationOptions? Options { get; set; }
    }
}
