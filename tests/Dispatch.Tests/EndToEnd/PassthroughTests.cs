using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// Passthrough vhosts: the dispatcher routes on the ClientHello and passes the raw socket; the
/// tenant's worker terminates TLS with the tenant's own key, which only it ever opens.
/// </summary>
public sealed class PassthroughTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public PassthroughTests(ITestOutputHelper output) => _output = output;

    private sealed record Setup(DispatchInstance D, int TlsPort, string TenantLive, string TenantArchive);

    private Setup Start(string name, IReadOnlyList<string>? wrapper = null)
    {
        var site = TwoTenantSite.Create(name, "A via passthrough", "B terminated");
        var tlsPort = site.TlsPort;

        // Tenant a's own certbot tree, owned by the tenant, readable by no one else.
        var tenantCerts = site.TenantCertificates("a-certs", TestWorld.TenantA);
        site.Vhost("a")["tls"] = "passthrough";
        site.Vhost("a")["certDir"] = Path.Combine(tenantCerts, "live", "a.localhost");
        site.Vhost("b")["certDir"] = site.CertDir("b.localhost");
        _dispatch = site.StartReady(_output, wrapper);
        return new Setup(_dispatch, tlsPort, Path.Combine(tenantCerts, "live", "a.localhost"), Path.Combine(tenantCerts, "archive", "a.localhost"));
    }

    private static string Handshake(int port, params string[] extra)
    {
        var r = Tools.RunWithInput(string.Empty, "openssl", ["s_client", "-connect", $"127.0.0.1:{port}", "-servername", "a.localhost", "-CAfile", TestWorld.CaPath, .. extra]);
        return r.Stdout + r.Stderr;
    }

    [SkippableFact]
    public void The_tenants_worker_terminates_TLS_1_3_and_1_2_with_its_own_key_and_negotiates_h2()
    {
        var s = Start("passthrough");
        var curl = Tools.Run("curl", "-sS", "--http2", "-w", " %{http_version}", "--cacert", TestWorld.CaPath, "--resolve", $"a.localhost:{s.TlsPort}:127.0.0.1", $"https://a.localhost:{s.TlsPort}/");
        Assert.Equal("A via passthrough 2", curl.Stdout);
        Assert.Contains("New, TLSv1.3", Handshake(s.TlsPort, "-tls1_3"), StringComparison.Ordinal);
        var v12 = Handshake(s.TlsPort, "-tls1_2");
        Assert.Contains("New, TLSv1.2", v12, StringComparison.Ordinal);
        Assert.Contains("Verify return code: 0 (ok)", v12, StringComparison.Ordinal);
        // b, terminated by the dispatcher on the same port, is unaffected.
        Assert.Equal(200, Tools.Curl("--cacert", TestWorld.CaPath, "--resolve", $"b.localhost:{s.TlsPort}:127.0.0.1", $"https://b.localhost:{s.TlsPort}/").Status);
        s.D.WaitForLine(new Regex(@"Worker \d+ \(a\): Loaded certificate for a\.localhost from .*a-certs/live/a\.localhost: serial"));
    }

    [SkippableFact]
    public void Neither_the_master_nor_the_dispatcher_ever_opens_the_tenants_key()
    {
        var trace = Path.Combine(Path.GetTempPath(), $"dispatch-strace-{Guid.NewGuid():N}");
        try
        {
            var s = Start("passthrough-audit", ["strace", "-f", "-qq", "-e", "trace=open,openat,openat2,clone,clone3,fork,vfork", "-e", "signal=none", "-o", trace]);
            Assert.Equal(200, Tools.Curl("--cacert", TestWorld.CaPath, "--resolve", $"a.localhost:{s.TlsPort}:127.0.0.1", $"https://a.localhost:{s.TlsPort}/").Status);
            var worker = s.D.WorkerPid("a");
            s.D.Dispose();

            // strace -f names threads by tid: map each tid to its process through the clone calls. A call another
            // thread interrupts is split in two lines ("clone3({flags=...} <unfinished ...>", then "<... clone3 resumed>
            // ...) = 5525"): its arguments are in the first, the child's tid in the second (seen on a fresh clone: a
            // worker thread that opened the key was left unmapped).
            var processOf = new Dictionary<int, int> { [s.D.MasterPid] = s.D.MasterPid };
            var unfinished = new Dictionary<int, string>();
            var keyOpeners = new List<int>();
            var lines = File.ReadAllLines(trace);
            foreach (var line in lines)
            {
                var start = Regex.Match(line, @"^(\d+)\s+(clone3?|fork|vfork)\((.*)<unfinished \.\.\.>");
                if (start.Success)
                {
                    unfinished[int.Parse(start.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture)] = start.Groups[3].Value;
                    continue;
                }

                var resumed = Regex.Match(line, @"^(\d+)\s+<\.\.\. (clone3?|fork|vfork) resumed>(.*)\)\s+=\s+(\d+)");
                var m = resumed.Success ? resumed : Regex.Match(line, @"^(\d+)\s+(clone3?|fork|vfork)\((.*)\)\s+=\s+(\d+)");
                if (m.Success)
                {
                    var parent = int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
                    var child = int.Parse(m.Groups[4].Value, System.Globalization.CultureInfo.InvariantCulture);
                    var arguments = (resumed.Success ? unfinished.GetValueOrDefault(parent, string.Empty) : string.Empty) + m.Groups[3].Value;
                    processOf[child] = arguments.Contains("CLONE_THREAD", StringComparison.Ordinal) ? processOf.GetValueOrDefault(parent, parent) : child;
                }
            }

            foreach (var line in lines.Where(l => l.Contains("privkey", StringComparison.Ordinal) && l.Contains("a-certs", StringComparison.Ordinal)))
            {
                var tid = int.Parse(line.Split(' ', 2)[0], System.Globalization.CultureInfo.InvariantCulture);
                keyOpeners.Add(processOf.GetValueOrDefault(tid, tid));
            }

            _output.WriteLine($"processes that opened the tenant's key: {string.Join(", ", keyOpeners.Distinct())}; master {s.D.MasterPid}, dispatcher {s.D.DispatcherPid}, worker {worker}");
            Assert.NotEmpty(keyOpeners); // the audit sees the worker's own opens
            Assert.All(keyOpeners, p => Assert.Equal(worker, p));
            Assert.Contains(s.D.DispatcherPid, processOf.Values);
        }
        finally
        {
            File.Delete(trace);
        }
    }

    [SkippableFact]
    public void A_renewed_certificate_is_picked_up_and_a_broken_one_is_refused_while_the_old_keeps_serving()
    {
        var s = Start("passthrough-reload");
        string Serial() => Regex.Match(Handshake(s.TlsPort, "-tls1_2"), @"Server public key is (\d+) bit").Groups[1].Value;
        Assert.Equal("256", Serial());

        // Renewal, certbot style: new files in archive/, live/ symlinks swapped. (The RSA lineage's files stand in for a renewal.)
        var rsa = Path.GetFullPath(Path.Combine(s.TenantArchive, "..", "a.localhost-rsa"));
        foreach (var f in new[] { "fullchain", "privkey" })
        {
            File.Copy(Path.Combine(rsa, $"{f}1.pem"), Path.Combine(s.TenantArchive, $"{f}2.pem"));
            TestWorld.Chown(Path.Combine(s.TenantArchive, $"{f}2.pem"), TestWorld.TenantA, recursive: false);
        }

        Swap(Path.Combine(s.TenantLive, "privkey.pem"), "../../archive/a.localhost/privkey2.pem");
        Swap(Path.Combine(s.TenantLive, "fullchain.pem"), "../../archive/a.localhost/fullchain2.pem");
        Assert.True(Tools.Eventually(() => Serial() == "2048"), "the renewed (RSA) certificate was not picked up");
        s.D.WaitForLine(new Regex(@"Reloaded certificate for a\.localhost"));

        // A broken renewal (key of another certificate): refused, logged, the previous one keeps serving.
        Swap(Path.Combine(s.TenantLive, "privkey.pem"), "../../archive/a.localhost/privkey1.pem");
        // Certificates are re-checked on handshakes (at most every 2 s): keep shaking hands until the refusal is logged.
        Assert.True(Tools.Eventually(() => Serial() == "2048" && Regex.IsMatch(s.D.Log, @"Worker \d+ \(a\): Certificate for a\.localhost in .* cannot be used \(the previous one keeps serving\)")));
        Assert.Equal("2048", Serial());
    }

    private static void Swap(string link, string target)
    {
        var temp = link + ".new";
        File.CreateSymbolicLink(temp, target);
        TestWorld.Chown(temp, TestWorld.TenantA, recursive: false);
        File.Move(temp, link, overwrite: true);
    }

    public void Dispose() => _dispatch?.Dispose();
}
