using System.Diagnostics;
using System.Text.Json.Nodes;
using System.Xml.Linq;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// testssl.sh and sslscan, tools no one here wrote, against every TLS engine of a running Dispatch: the
/// BouncyCastle engine (ECDSA and RSA certificates), the <c>openssl</c> engine (ECDSA and RSA) and a passthrough
/// vhost whose worker terminates TLS itself. For CI time, testssl runs its protocol, cipher-category and
/// vulnerability checks (<c>-p -s -U</c>) on every engine, and on the BouncyCastle engine (the handed session, the
/// default) server preference, forward secrecy and the server defaults too (<c>-P -f -S</c>), all in parallel;
/// scripts/scan.sh runs every check and docs/scanners.md records the result. What is asserted: no testssl finding of
/// severity MEDIUM or above, and from sslscan's XML exactly TLS 1.2 and 1.3, only the AEAD suites every engine
/// documents (and on the BouncyCastle engine every one of them), only X25519 and P-256, no renegotiation, no
/// compression, no heartbleed. A CBC suite or TLS 1.0 offered by any engine fails it.
/// </summary>
public sealed class ScannerTests : IDisposable
{
    /// <summary>The suites docs/configuration.md lists for every engine (OpenSSL names, as sslscan prints them).</summary>
    private static readonly HashSet<string> DocumentedSuites =
    [
        "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305",
    ];

    private static readonly HashSet<string> DocumentedGroups = ["x25519", "secp256r1 (NIST P-256)"];

    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public ScannerTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public async Task Testssl_and_sslscan_find_nothing_of_medium_severity_and_only_the_documented_suites_on_every_engine()
    {
        TestWorld.RequireRoot();
        foreach (var tool in new[] { "/usr/bin/testssl", "/usr/bin/sslscan" })
            Assert.True(File.Exists(tool), $"{tool} is missing: install testssl.sh and sslscan (run-tests.sh does)");
        var site = TwoTenantSite.Create("scanners");
        var (dir, tlsPort) = (site.Directory, site.TlsPort);
        var tenantCerts = site.TenantCertificates("b-certs", TestWorld.TenantB);
        site.Config["dispatcher"]!["handshakeTimeout"] = "30s";
        site.Terminate("a", engine: "bouncycastle", rsaToo: true);
        // testssl's server defaults (-S) rate HIGH a certificate with no CRL or OCSP address, as the sample's are: for
        // them, a vhost of the same engine with a certificate like a public CA's (CRL distribution point, OCSP responder)
        // from the sample CA.
        site.Config["vhosts"]!["d.localhost"] = new JsonObject
        {
            ["pool"] = "a",
            ["root"] = site.RootA,
            ["tls"] = "terminate",
            ["engine"] = "bouncycastle",
            ["certDir"] = PublicLikeCertificate(dir, "d.localhost"),
        };
        site.Config["vhosts"]!["c.localhost"] = new JsonObject
        {
            ["pool"] = "a",
            ["root"] = site.RootA,
            ["tls"] = "terminate",
            ["engine"] = "openssl",
            ["certDirs"] = new JsonArray(site.CertDir("c.localhost"), site.CertDir("c.localhost-rsa")),
        };
        site.Vhost("b")["tls"] = "passthrough";
        site.Vhost("b")["certDir"] = Path.Combine(tenantCerts, "live", "b.localhost");
        _dispatch = site.StartReady(_output);

        // Server preference, forward secrecy and the server defaults (-P -f -S) on the handed engine, the default, in a
        // run of their own beside the others: the scans are bound by CPU, and the longest run is the test's time. The
        // HTTP header checks (-h: HSTS and the like) are per-site HTTP settings, not an engine's.
        (string Name, string Host, string[] Checks)[] scans =
        [
            ("bouncycastle", "a.localhost", ["-p", "-s", "-U"]),
            ("openssl", "c.localhost", ["-p", "-s", "-U"]),
            ("passthrough", "b.localhost", ["-p", "-s", "-U"]),
            ("bouncycastle-defaults", "d.localhost", ["-P", "-f", "-S"]),
        ];
        foreach (var host in scans.Select(e => e.Host).Distinct())
        {
            // Each pool's first worker starts on demand: started before the scans, so that no probe waits for it.
            var warm = Tools.Curl("--max-time", "60", "--cacert", TestWorld.CaPath, "--resolve", $"{host}:{tlsPort}:127.0.0.1", $"https://{host}:{tlsPort}/");
            Assert.Equal(200, warm.Status);
        }

        var clock = Stopwatch.StartNew();
        await Task.WhenAll(scans.Select(e => Task.WhenAll(
            RunAsync("testssl", [.. e.Checks, "--quiet", "--color", "0", "--warnings", "off", "--add-ca", TestWorld.CaPath, "--ip", "127.0.0.1",
                "--jsonfile", Path.Combine(dir, $"testssl-{e.Name}.json"), $"https://{e.Host}:{tlsPort}/"]),
            RunAsync("sslscan", "--no-colour", "--timeout=20", $"--sni-name={e.Host}", $"--xml={Path.Combine(dir, $"sslscan-{e.Name}.xml")}", $"127.0.0.1:{tlsPort}"))));
        _output.WriteLine($"testssl and sslscan, {scans.Length} runs in parallel: {clock.Elapsed.TotalSeconds:0} s");

        var problems = new List<string>();
        foreach (var (name, _, _) in scans)
        {
            foreach (var f in TestsslFindings(Path.Combine(dir, $"testssl-{name}.json")))
            {
                _output.WriteLine($"{name}: testssl {f}");
                if (f.StartsWith("MEDIUM", StringComparison.Ordinal) || f.StartsWith("HIGH", StringComparison.Ordinal) || f.StartsWith("CRITICAL", StringComparison.Ordinal))
                    problems.Add($"{name}: testssl {f}");
            }

            problems.AddRange(SslscanProblems(Path.Combine(dir, $"sslscan-{name}.xml"), _output).Select(p => $"{name}: sslscan {p}"));
        }

        // Forward secrecy offered (-f; the id is "PFS" in Debian's testssl 3.0, "FS" in later ones).
        if (!AllFindings(Path.Combine(dir, "testssl-bouncycastle-defaults.json")).Any(f => f.Id is "PFS" or "FS" && f.Severity == "OK" && f.Finding == "offered"))
            problems.Add("bouncycastle-defaults: testssl does not report forward secrecy offered");

        // Every documented suite accepted by the engine with an ECDSA and an RSA certificate.
        var accepted = XDocument.Load(Path.Combine(dir, "sslscan-bouncycastle.xml")).Descendants("cipher").Select(c => (string?)c.Attribute("cipher")).ToHashSet();
        problems.AddRange(DocumentedSuites.Where(suite => !accepted.Contains(suite)).Select(suite => $"bouncycastle: sslscan does not list {suite}"));

        Assert.True(problems.Count == 0, string.Join('\n', problems));
    }

    [Fact]
    public void The_sslscan_judgement_refuses_tls10_a_cbc_suite_a_weak_group_and_renegotiation()
    {
        var file = Path.Combine(Path.GetTempPath(), $"sslscan-{Guid.NewGuid():N}.xml");
        File.WriteAllText(file, """
            <?xml version="1.0" encoding="UTF-8"?>
            <document title="SSLScan Results" version="2.0.7">
             <ssltest host="127.0.0.1" sniname="a.localhost" port="443">
              <protocol type="tls" version="1.0" enabled="1" />
              <protocol type="tls" version="1.2" enabled="1" />
              <protocol type="tls" version="1.3" enabled="1" />
              <renegotiation supported="1" secure="1" />
              <cipher status="preferred" sslversion="TLSv1.3" bits="128" cipher="TLS_AES_128_GCM_SHA256" />
              <cipher status="accepted" sslversion="TLSv1.2" bits="128" cipher="ECDHE-ECDSA-AES128-GCM-SHA256" />
              <cipher status="accepted" sslversion="TLSv1.2" bits="128" cipher="ECDHE-ECDSA-AES128-SHA256" />
              <group sslversion="TLSv1.3" bits="224" name="x448" id="0x001e" />
             </ssltest>
            </document>
            """);
        try
        {
            var problems = SslscanProblems(file);
            Assert.Contains(problems, p => p.StartsWith("protocols enabled: tls1.0", StringComparison.Ordinal));
            Assert.Contains(problems, p => p.Contains("ECDHE-ECDSA-AES128-SHA256", StringComparison.Ordinal));
            Assert.Contains(problems, p => p.Contains("x448", StringComparison.Ordinal));
            Assert.Contains("renegotiation supported", problems);
            Assert.Equal(4, problems.Count);
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>Every finding in testssl's JSON file ("SEVERITY id: finding"), the informational ones left out.</summary>
    internal static List<string> TestsslFindings(string jsonFile)
    {
        var findings = AllFindings(jsonFile);

        // testssl's own complaints about the machine it runs on, not about the server.
        Assert.DoesNotContain(findings, f => f.Id == "scanProblem");
        return findings.Where(f => f.Severity is not ("OK" or "INFO" or "DEBUG") && f.Id != "engine_problem").Select(f => $"{f.Severity} {f.Id}: {f.Finding}").ToList();
    }

    private static List<(string Severity, string Id, string Finding)> AllFindings(string jsonFile)
    {
        Assert.True(File.Exists(jsonFile), $"testssl wrote no {jsonFile}");
        return JsonNode.Parse(File.ReadAllText(jsonFile))!.AsArray()
            .Select(e => (Severity: e!["severity"]!.GetValue<string>(), Id: e["id"]!.GetValue<string>(), Finding: e["finding"]!.GetValue<string>()))
            .ToList();
    }

    /// <summary>
    /// A certificate for <paramref name="host"/> (P-256) from the sample CA, with what a public CA's carries (a CRL
    /// distribution point, an OCSP responder), in a certificate directory of its own under <paramref name="dir"/>.
    /// Returns the directory.
    /// </summary>
    private static string PublicLikeCertificate(string dir, string host)
    {
        var certs = Path.Combine(dir, "scan-cert");
        Directory.CreateDirectory(certs);
        var ext = Path.Combine(certs, "ext.cnf");
        File.WriteAllText(ext, $"subjectAltName=DNS:{host}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\ncrlDistributionPoints=URI:http://ca.localhost/ca.crl\nauthorityInfoAccess=OCSP;URI:http://ocsp.localhost/\n");
        var key = Path.Combine(certs, "privkey.pem");
        var keygen = Tools.Run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key);
        Assert.True(keygen.ExitCode == 0, keygen.Stderr);
        Assert.Equal(0, Tools.Run("openssl", "req", "-new", "-key", key, "-subj", $"/CN={host}", "-out", Path.Combine(certs, "req.csr")).ExitCode);
        var ca = Path.Combine(TestWorld.RepoRoot, "certs-sample");
        var sign = Tools.Run("openssl", "x509", "-req", "-in", Path.Combine(certs, "req.csr"), "-CA", Path.Combine(ca, "ca.pem"), "-CAkey", Path.Combine(ca, "ca-key.pem"), "-CAcreateserial", "-CAserial", Path.Combine(certs, "ca.srl"), "-days", "90", "-sha256", "-extfile", ext, "-out", Path.Combine(certs, "cert.pem"));
        Assert.True(sign.ExitCode == 0, sign.Stderr);
        File.WriteAllText(Path.Combine(certs, "fullchain.pem"), File.ReadAllText(Path.Combine(certs, "cert.pem")));
        File.SetUnixFileMode(key, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return certs;
    }

    /// <summary>What in sslscan's XML report differs from the documented policy (empty when nothing).</summary>
    internal static List<string> SslscanProblems(string xmlFile, ITestOutputHelper? output = null)
    {
        Assert.True(File.Exists(xmlFile), $"sslscan wrote no {xmlFile}");
        var test = XDocument.Load(xmlFile).Root!.Element("ssltest") ?? throw new InvalidDataException($"{xmlFile}: no <ssltest>");
        var problems = new List<string>();
        var enabled = test.Elements("protocol").Where(p => (string?)p.Attribute("enabled") == "1").Select(p => $"{(string?)p.Attribute("type")}{(string?)p.Attribute("version")}").ToList();
        output?.WriteLine($"{Path.GetFileName(xmlFile)}: protocols {string.Join(' ', enabled)}");
        if (!enabled.Order(StringComparer.Ordinal).SequenceEqual(["tls1.2", "tls1.3"]))
            problems.Add($"protocols enabled: {string.Join(' ', enabled)} (expected exactly tls1.2 tls1.3)");
        foreach (var cipher in test.Elements("cipher"))
        {
            var name = (string?)cipher.Attribute("cipher") ?? "?";
            output?.WriteLine($"{Path.GetFileName(xmlFile)}: {(string?)cipher.Attribute("status")} {(string?)cipher.Attribute("sslversion")} {name}");
            if (!DocumentedSuites.Contains(name))
                problems.Add($"suite {name} accepted in {(string?)cipher.Attribute("sslversion")}, not one of the documented AEAD suites");
        }

        if (!test.Elements("cipher").Any(c => (string?)c.Attribute("sslversion") == "TLSv1.3") || !test.Elements("cipher").Any(c => (string?)c.Attribute("sslversion") == "TLSv1.2"))
            problems.Add("no TLS 1.3 or no TLS 1.2 suite accepted");
        foreach (var group in test.Elements("group"))
        {
            var name = (string?)group.Attribute("name") ?? "?";
            if (!DocumentedGroups.Contains(name))
                problems.Add($"group {name} accepted in {(string?)group.Attribute("sslversion")} (we document X25519 and P-256)");
        }

        if (test.Element("renegotiation") is { } renegotiation && (string?)renegotiation.Attribute("supported") == "1")
            problems.Add("renegotiation supported");
        if (test.Element("compression") is { } compression && (string?)compression.Attribute("supported") == "1")
            problems.Add("TLS compression supported");
        problems.AddRange(test.Elements("heartbleed").Where(h => (string?)h.Attribute("vulnerable") == "1").Select(h => $"heartbleed in {(string?)h.Attribute("sslversion")}"));
        return problems;
    }

    private static async Task RunAsync(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var deadline = new CancellationTokenSource(TimeSpan.FromMinutes(10));
        try
        {
            await p.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish within 10 minutes");
        }

        // testssl exits with the number of findings of the chosen severity (or 0); sslscan with 0. Both write their report
        // whatever the status: the report is what is judged, the exit status only when there is none.
        _ = await stdout;
        _ = await stderr;
    }

    public void Dispose() => _dispatch?.Dispose();
}
