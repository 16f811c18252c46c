using System.Security.Cryptography;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>Configuration reload on file change and SIGHUP: applied atomically, or rejected with the JSON path while the last good one serves.</summary>
public sealed class ReloadTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public ReloadTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public async Task Adding_breaking_and_removing_vhosts_without_a_restart_while_a_download_continues()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("reload");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var big = new byte[20 << 20];
        new Random(9).NextBytes(big);
        File.WriteAllBytes(Path.Combine(a, "big.bin"), big);
        TestWorld.Chown(Path.Combine(a, "big.bin"), TestWorld.TenantA, recursive: false);
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var c = TestWorld.NewTenantTree(dir, "c", 10003, new Dictionary<string, string> { ["index.html"] = "C" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        var url = $"http://127.0.0.1:{_dispatch.HttpPort}/";
        Assert.Equal(200, Tools.Curl("-H", "Host: b.localhost", url).Status);
        var workerB = _dispatch.WorkerPid("b");
        Assert.Equal(404, Tools.Curl("-H", "Host: c.localhost", url).Status);

        // A slow download on a continues through every reload.
        var target = Path.Combine(Path.GetTempPath(), $"dispatch-reload-{Guid.NewGuid():N}");
        var download = Task.Run(() => Tools.Run("curl", "-sS", "--limit-rate", "4M", "-o", target, "-H", "Host: a.localhost", url + "big.bin"));

        void Write(JsonObject c) => File.WriteAllText(_dispatch!.ConfigPath, c.ToJsonString());
        config["pools"]!["c"] = new JsonObject { ["user"] = "10003", ["group"] = "10003" };
        config["vhosts"]!["c.localhost"] = new JsonObject { ["pool"] = "c", ["root"] = c };
        Write(config);
        _dispatch.WaitForLine(new Regex(@"Configuration reloaded \(file changed\), version 2"));
        Assert.Equal("C", Tools.Curl("-H", "Host: c.localhost", url).Body);

        // A broken edit: rejected with its JSON path; the last good configuration keeps serving.
        config["pools"]!["c"]!["user"] = "0";
        Write(config);
        _dispatch.WaitForLine(new Regex(@"rejected, the last good configuration keeps serving: .*dispatch\.json:\d+: pools:c:user: a pool must not run as root"));
        Assert.Equal("C", Tools.Curl("-H", "Host: c.localhost", url).Body);

        // Removing b (SIGHUP this time): unreachable, and its worker leaves.
        config["pools"]!["c"]!["user"] = "10003";
        config["vhosts"]!.AsObject().Remove("b.localhost");
        config["pools"]!.AsObject().Remove("b");
        var json = config.ToJsonString();
        File.WriteAllText(_dispatch.ConfigPath + ".tmp", json);
        File.Move(_dispatch.ConfigPath + ".tmp", _dispatch.ConfigPath, overwrite: true);
        Assert.Equal(0, Tools.Run("kill", "-HUP", _dispatch.MasterPid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);
        _dispatch.WaitForLine(new Regex(@"Configuration reloaded .*workers retired for b"));
        Assert.Equal(404, Tools.Curl("-H", "Host: b.localhost", url).Status);
        _dispatch.WaitForLine(new Regex($@"Worker {workerB} of pool b exited \(exit code 0\)"));

        var result = await download;
        try
        {
            Assert.True(result.ExitCode == 0, result.Stderr);
            Assert.Equal(SHA256.HashData(big), SHA256.HashData(File.ReadAllBytes(target)));
        }
        finally
        {
            File.Delete(target);
        }
    }

    /// <summary>
    /// <c>reload.onChange: false</c>: an edit is noticed and left for SIGHUP (as with nginx); the setting is the config in
    /// force's, so a reload that turns it back on makes the next edit reload by itself.
    /// </summary>
    [SkippableFact]
    public void With_reload_on_change_off_an_edit_waits_for_SIGHUP()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("reload-manual");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var c = TestWorld.NewTenantTree(dir, "c", 10003, new Dictionary<string, string> { ["index.html"] = "C" });
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["reload"] = new JsonObject { ["onChange"] = false };
        config["log"] = new JsonObject { ["level"] = "Debug" }; // the master says when it leaves an edit alone
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        var url = $"http://127.0.0.1:{_dispatch.HttpPort}/";
        void Write(JsonObject c) => File.WriteAllText(_dispatch!.ConfigPath, c.ToJsonString());
        void Hup() => Assert.Equal(0, Tools.Run("kill", "-HUP", _dispatch!.MasterPid.ToString(System.Globalization.CultureInfo.InvariantCulture)).ExitCode);

        config["pools"]!["c"] = new JsonObject { ["user"] = "10003", ["group"] = "10003" };
        config["vhosts"]!["c.localhost"] = new JsonObject { ["pool"] = "c", ["root"] = c };
        Write(config);
        _dispatch.WaitForLine(new Regex(@"dispatch\.json changed; not reloaded \(reload\.onChange is false\)"));
        Assert.Equal(404, Tools.Curl("-H", "Host: c.localhost", url).Status);
        Assert.DoesNotMatch(new Regex(@"Configuration reloaded"), _dispatch.Log);

        Hup();
        _dispatch.WaitForLine(new Regex(@"Configuration reloaded \(SIGHUP\), version 2"));
        Assert.Equal("C", Tools.Curl("-H", "Host: c.localhost", url).Body);

        // Turned back on by a reload: the next edit applies itself.
        var leftAlone = new Regex(@"dispatch\.json changed; not reloaded");
        var seen = leftAlone.Count(_dispatch.Log); // an edit may raise more than one event
        config["reload"]!["onChange"] = true;
        Write(config);
        _dispatch.WaitForLine(leftAlone, skip: seen);
        Hup();
        _dispatch.WaitForLine(new Regex(@"Configuration reloaded \(SIGHUP\), version 3"));
        config["vhosts"]!.AsObject().Remove("c.localhost");
        config["pools"]!.AsObject().Remove("c");
        Write(config);
        _dispatch.WaitForLine(new Regex(@"Configuration reloaded \(file changed\), version 4"));
        Assert.Equal(404, Tools.Curl("-H", "Host: c.localhost", url).Status);
    }

    [SkippableFact]
    public async Task A_renewed_certificate_is_served_to_the_next_handshake_while_an_open_connection_continues()
    {
        var (live, tlsPort) = StartWithTlsVhostA("cert-reload");
        string KeyBits() => ServedKeyBits(tlsPort);
        Assert.Equal("256", KeyBits());

        // An open connection, before the renewal.
        using var tcp = new System.Net.Sockets.TcpClient();
        await tcp.ConnectAsync(System.Net.IPAddress.Loopback, tlsPort);
        await using var ssl = new System.Net.Security.SslStream(tcp.GetStream());
        await ssl.AuthenticateAsClientAsync(new System.Net.Security.SslClientAuthenticationOptions
        {
            TargetHost = "a.localhost",
            CertificateChainPolicy = TestWorld.SampleCaChainPolicy(),
        });

        // certbot renewal: new files in archive/ (the RSA lineage's stand in), live/ symlinks swapped.
        var archive = Path.GetFullPath(Path.Combine(live, "..", "archive"));
        foreach (var f in new[] { "fullchain", "privkey" })
            File.Copy(Path.Combine(archive, "a.localhost-rsa", $"{f}1.pem"), Path.Combine(archive, "a.localhost", $"{f}2.pem"));
        foreach (var f in new[] { "privkey", "fullchain" })
        {
            var link = Path.Combine(live, "a.localhost", $"{f}.pem");
            File.CreateSymbolicLink(link + ".new", $"../../archive/a.localhost/{f}2.pem");
            File.Move(link + ".new", link, overwrite: true);
        }

        _dispatch!.WaitForLine(new Regex(@"Configuration reloaded \(certificate changed\)"));
        Assert.True(Tools.Eventually(() => KeyBits() == "2048"), "the renewed certificate is not served");

        await ssl.WriteAsync(System.Text.Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n"));
        var response = new MemoryStream();
        await ssl.CopyToAsync(response).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.StartsWith("HTTP/1.1 200", System.Text.Encoding.ASCII.GetString(response.ToArray()), StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_renewal_with_a_mismatched_key_or_an_unreadable_file_is_rejected_and_the_old_certificate_stays()
    {
        var (live, tlsPort) = StartWithTlsVhostA("cert-reload-bad");
        string KeyBits() => ServedKeyBits(tlsPort);
        Assert.Equal("256", KeyBits());
        var archive = Path.GetFullPath(Path.Combine(live, "..", "archive"));
        void Swap(string file, string target)
        {
            var link = Path.Combine(live, "a.localhost", file);
            File.CreateSymbolicLink(link + ".new", target);
            File.Move(link + ".new", link, overwrite: true);
        }

        // Only the chain renewed (the RSA lineage's), the key still the old ECDSA one: they do not match.
        File.Copy(Path.Combine(archive, "a.localhost-rsa", "fullchain1.pem"), Path.Combine(archive, "a.localhost", "fullchain2.pem"));
        Swap("fullchain.pem", "../../archive/a.localhost/fullchain2.pem");
        _dispatch!.WaitForLine(new Regex(@"Reload \(certificate changed\) rejected, the last good configuration keeps serving: .*privkey.pem does not match the certificate in fullchain.pem"));
        Assert.Equal("256", KeyBits());

        // Back to a sound pair, then a key link pointing at nothing: rejected too, the old one still served.
        Swap("fullchain.pem", "../../archive/a.localhost/fullchain1.pem");
        _dispatch.WaitForLine(new Regex(@"Configuration reloaded \(certificate changed\), version 2"));
        Swap("privkey.pem", "../../archive/a.localhost/privkey9.pem");
        _dispatch.WaitForLine(new Regex(@"Reload \(certificate changed\) rejected, the last good configuration keeps serving: .*privkey9.pem|Reload \(certificate changed\) rejected, the last good configuration keeps serving: .*privkey.pem: .*(No such file|not found|does not exist)"));
        Assert.Equal("256", KeyBits());
        Assert.Equal(200, Tools.Curl("--cacert", TestWorld.CaPath, "--resolve", $"a.localhost:{tlsPort}:127.0.0.1", $"https://a.localhost:{tlsPort}/").Status);
    }

    /// <summary>Two tenants; a.localhost terminated with the sample ECDSA certificate (certbot layout) on a TLS listener.</summary>
    private (string Live, int TlsPort) StartWithTlsVhostA(string name)
    {
        var site = TwoTenantSite.Create(name);
        site.Vhost("a")["certDir"] = site.CertDir("a.localhost");
        _dispatch = site.StartReady(_output);
        return (site.Live, site.TlsPort);
    }

    /// <summary>The key size of the certificate a new handshake for a.localhost gets (openssl s_client).</summary>
    private static string ServedKeyBits(int tlsPort) => Regex.Match(
        Tools.RunWithInput(string.Empty, "openssl", "s_client", "-connect", $"127.0.0.1:{tlsPort}", "-servername", "a.localhost", "-CAfile", TestWorld.CaPath).Stdout,
        @"Server public key is (\d+) bit").Groups[1].Value;

    public void Dispose() => _dispatch?.Dispose();
}
