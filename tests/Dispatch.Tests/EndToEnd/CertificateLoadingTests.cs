using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>The master reads certificate directories as root without being steered by anyone else.</summary>
public sealed class CertificateLoadingTests
{
    private readonly ITestOutputHelper _output;

    public CertificateLoadingTests(ITestOutputHelper output) => _output = output;

    private static (string Config, string Live) Setup(string name)
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory(name);
        var live = TestWorld.InstallSampleCertificates(dir);
        var config = DispatchInstance.CheckableConfig(dir);
        config["listen"]!.AsArray().Add(new JsonObject { ["endpoint"] = "127.0.0.1:8443", ["protocol"] = "tls" });
        config["vhosts"]!["a.localhost"]!["certDir"] = Path.Combine(live, "a.localhost");
        var file = Path.Combine(dir, "dispatch.json");
        File.WriteAllText(file, config.ToJsonString());
        return (file, live);
    }

    private string Check(string config)
    {
        var r = Tools.Run(Path.Combine(TestWorld.AppDirectory, "Master"), "check", "--config", config);
        _output.WriteLine(r.Stdout + r.Stderr);
        return r.ExitCode == 0 ? "OK" : r.Stderr;
    }

    [SkippableFact]
    public void A_sound_certbot_directory_is_accepted()
    {
        var (config, _) = Setup("cert-ok");
        Assert.Equal("OK", Check(config));
    }

    [SkippableFact]
    public void A_key_owned_by_someone_else_is_refused()
    {
        var (config, live) = Setup("cert-owner");
        var key = Path.Combine(live, "..", "archive", "a.localhost", "privkey1.pem");
        TestWorld.Chown(key, TestWorld.TenantA, recursive: false);
        Assert.Contains("privkey1.pem: owned by uid 10001, not root", Check(config), StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_group_writable_file_and_a_writable_directory_are_refused()
    {
        var (config, live) = Setup("cert-mode");
        var chain = Path.GetFullPath(Path.Combine(live, "..", "archive", "a.localhost", "fullchain1.pem"));
        File.SetUnixFileMode(chain, (UnixFileMode)0b110_110_100);
        Assert.Contains("fullchain1.pem: writable by group or others", Check(config), StringComparison.Ordinal);
        File.SetUnixFileMode(chain, (UnixFileMode)0b110_100_100);
        File.SetUnixFileMode(Path.Combine(live, "a.localhost"), (UnixFileMode)0b111_111_111);
        Assert.Contains("is writable by everyone", Check(config), StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_symlink_that_is_not_certbots_live_to_archive_link_is_refused()
    {
        var (config, live) = Setup("cert-symlink");
        var key = Path.Combine(live, "a.localhost", "privkey.pem");
        File.Delete(key);
        File.CreateSymbolicLink(key, "/etc/shadow");
        Assert.Contains("symlink to '/etc/shadow' is not certbot's", Check(config), StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_key_that_does_not_match_its_certificate_is_refused()
    {
        var (config, live) = Setup("cert-mismatch");
        // a.localhost's certificate with b.localhost's key.
        var key = Path.Combine(live, "a.localhost", "privkey.pem");
        File.Delete(key);
        File.CreateSymbolicLink(key, "../../archive/a.localhost/privkey2.pem");
        var other = Path.GetFullPath(Path.Combine(live, "..", "archive", "a.localhost", "privkey2.pem"));
        File.Copy(Path.GetFullPath(Path.Combine(live, "..", "archive", "b.localhost", "privkey1.pem")), other);
        Assert.Contains("privkey.pem does not match the certificate in fullchain.pem", Check(config), StringComparison.Ordinal);
    }
}
