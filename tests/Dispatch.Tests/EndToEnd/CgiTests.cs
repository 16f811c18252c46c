using System.Security.Cryptography;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>CGI run by the tenant's jailed worker, reached through the dispatcher over plain HTTP and TLS.</summary>
public sealed class CgiTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public CgiTests(ITestOutputHelper output) => _output = output;

    private (DispatchInstance D, int TlsPort, string RootB) Start()
    {
        var site = TwoTenantSite.Create("cgi", indexB: null, moreB: new Dictionary<string, string> { ["secret.txt"] = "B-SECRET" });
        var rootB = site.RootB;
        var cgi = site.CgiTree(new Dictionary<string, string>
        {
            ["id.sh"] = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nid -u\nid -g\n",
            ["sha.sh"] = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nsha256sum | cut -d' ' -f1\n",
            ["peek.sh"] = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\ncat /etc/passwd >/dev/null 2>&1 && echo passwd-READ || echo passwd-denied\ncat \"$1\" 2>/dev/null; cat " + Path.Combine(rootB, "secret.txt") + " 2>/dev/null && echo other-tenant-READ || echo other-tenant-denied\n",
        });
        var a = site.Vhost("a");
        a["certDir"] = site.CertDir("a.localhost");
        a["cgi"] = new JsonObject { ["/cgi-bin/"] = cgi };
        _dispatch = site.StartReady(_output);
        return (_dispatch, site.TlsPort, rootB);
    }

    [SkippableFact]
    public void A_CGI_script_runs_as_the_tenant_jailed_and_a_10_MiB_upload_over_TLS_arrives_intact()
    {
        var (d, tlsPort, _) = Start();
        var tls = new[] { "--cacert", TestWorld.CaPath, "--resolve", $"a.localhost:{tlsPort}:127.0.0.1" };
        var url = $"https://a.localhost:{tlsPort}/cgi-bin/";

        var id = Tools.Curl([.. tls, url + "id.sh"]);
        Assert.Equal(200, id.Status);
        Assert.Equal(["10001", "10001"], id.Body.Split('\n', StringSplitOptions.RemoveEmptyEntries));

        var upload = Path.Combine(Path.GetTempPath(), $"dispatch-up-{Guid.NewGuid():N}");
        try
        {
            var data = new byte[10 << 20];
            new Random(3).NextBytes(data);
            File.WriteAllBytes(upload, data);
            var sha = Tools.Curl([.. tls, "--data-binary", "@" + upload, "-H", "Content-Type: application/octet-stream", url + "sha.sh"]);
            Assert.Equal(200, sha.Status);
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)), sha.Body.Trim());
        }
        finally
        {
            File.Delete(upload);
        }

        var peek = Tools.Curl([.. tls, url + "peek.sh"]);
        Assert.Contains("passwd-denied", peek.Body, StringComparison.Ordinal);
        Assert.Contains("other-tenant-denied", peek.Body, StringComparison.Ordinal);
        Assert.DoesNotContain("B-SECRET", peek.Body, StringComparison.Ordinal);

        // Its worker's own proof now runs a real child (CGI needs exec): cat could not read the probes.
        var worker = d.WorkerPid("a");
        var proof = d.WaitForLine(new Regex($@"Jail of Worker {worker} \(a\) holds: .*")).Value;
        Assert.Contains("/etc/passwd [0/32 threads opened; child denied (cat exit 1)]", proof, StringComparison.Ordinal);
    }

    public void Dispose() => _dispatch?.Dispose();
}
