using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// The usual end-to-end site, so that a test says only what differs: a fresh test directory holding tenant trees
/// a (uid <see cref="TestWorld.TenantA"/>) and b (<see cref="TestWorld.TenantB"/>) with an index.html each, the sample
/// certificates (certbot layout, <see cref="TestWorld.InstallSampleCertificates"/>), and
/// <see cref="DispatchInstance.SampleConfig"/> over them with a TLS listener on a free port beside the plain HTTP one.
/// No vhost terminates TLS until the test says so (<see cref="Terminate"/>, or <see cref="Vhost"/> for anything else).
/// </summary>
/// <param name="Directory">The test directory.</param>
/// <param name="RootA">Tenant a's tree.</param>
/// <param name="RootB">Tenant b's tree.</param>
/// <param name="Live">The sample certificates' live/ directory (one folder a name: a.localhost, a.localhost-rsa, b.localhost, ...).</param>
/// <param name="Config">The config to adjust before <see cref="StartReady"/>.</param>
/// <param name="TlsPort">The TLS listener's port.</param>
public sealed record TwoTenantSite(string Directory, string RootA, string RootB, string Live, JsonObject Config, int TlsPort)
{
    public int HttpPort => int.Parse(Config["listen"]![0]!["endpoint"]!.GetValue<string>().Split(':')[^1], System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// Creates the site (as root: <see cref="TestWorld.RequireRoot"/>). A null index leaves that tree without an index.html;
    /// <paramref name="moreA"/> and <paramref name="moreB"/> are further files of each tree (relative path to content).
    /// </summary>
    public static TwoTenantSite Create(string name, string? indexA = "A", string? indexB = "B", IReadOnlyDictionary<string, string>? moreA = null, IReadOnlyDictionary<string, string>? moreB = null)
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory(name);
        var rootA = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, Files(indexA, moreA));
        var rootB = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, Files(indexB, moreB));
        var live = TestWorld.InstallSampleCertificates(dir);
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), rootA, rootB);
        var tlsPort = TestWorld.FreePort();
        config["listen"]!.AsArray().Add(new JsonObject { ["endpoint"] = $"127.0.0.1:{tlsPort}", ["protocol"] = "tls" });
        return new TwoTenantSite(dir, rootA, rootB, live, config, tlsPort);
    }

    /// <summary>The config of vhost <paramref name="tenant"/>.localhost.</summary>
    public JsonNode Vhost(string tenant) => Config["vhosts"]![$"{tenant}.localhost"]!;

    /// <summary>The sample certificate directory of <paramref name="name"/> (a.localhost, a.localhost-rsa, ...).</summary>
    public string CertDir(string name) => Path.Combine(Live, name);

    /// <summary>
    /// Vhost <paramref name="tenant"/>.localhost terminates TLS with its sample certificate (ECDSA; with
    /// <paramref name="rsaToo"/>, the RSA one as well), on <paramref name="engine"/> when one is given. Returns the vhost.
    /// </summary>
    public JsonNode Terminate(string tenant, string? engine = null, bool rsaToo = false)
    {
        var vhost = Vhost(tenant);
        vhost["tls"] = "terminate";
        if (engine is not null)
            vhost["engine"] = engine;
        if (rsaToo)
            vhost["certDirs"] = new JsonArray(CertDir($"{tenant}.localhost"), CertDir($"{tenant}.localhost-rsa"));
        else
            vhost["certDir"] = CertDir($"{tenant}.localhost");
        return vhost;
    }

    /// <summary>
    /// A CGI directory cgi-a of tenant a beside the trees, holding <paramref name="scripts"/> (name to text), each 0500
    /// (for a vhost's <c>"cgi": { "/cgi-bin/": ... }</c>). Returns its path.
    /// </summary>
    public string CgiTree(IReadOnlyDictionary<string, string> scripts)
    {
        var cgi = TestWorld.NewTenantTree(Directory, "cgi-a", TestWorld.TenantA, scripts);
        foreach (var f in System.IO.Directory.GetFiles(cgi))
            File.SetUnixFileMode(f, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        return cgi;
    }

    /// <summary>
    /// A tenant's own copy of the sample certbot tree (archive/ and live/), at <paramref name="name"/> in the test directory,
    /// owned by <paramref name="uid"/> and readable by no one else (for passthrough, where only the tenant's worker reads
    /// its key). Returns its path; its live/ holds one folder a name as <see cref="Live"/> does.
    /// </summary>
    public string TenantCertificates(string name, uint uid)
    {
        var copy = Path.Combine(Directory, name);
        Assert.Equal(0, Tools.Run("cp", "-a", Path.GetFullPath(Path.Combine(Live, "..")), copy).ExitCode);
        TestWorld.Chown(copy, uid, recursive: true);
        File.SetUnixFileMode(copy, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return copy;
    }

    public DispatchInstance StartReady(ITestOutputHelper? output, IReadOnlyList<string>? wrapper = null) =>
        DispatchInstance.StartReady(Directory, Config, output, wrapper);

    private static Dictionary<string, string> Files(string? index, IReadOnlyDictionary<string, string>? more)
    {
        var files = new Dictionary<string, string>();
        if (index is not null)
            files["index.html"] = index;
        foreach (var (path, content) in more ?? new Dictionary<string, string>())
            files[path] = content;
        return files;
    }
}
