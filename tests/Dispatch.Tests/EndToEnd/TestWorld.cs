using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// Where end-to-end tests run: the published executables (scripts/publish.sh: NativeAOT, what ships)
/// staged once per test run into a root-owned,
/// world-traversable directory (the master refuses anything weaker), and per test a fresh directory
/// for config and tenant trees. Everything lives under /var/lib/dispatch-tests, which only root can write.
/// </summary>
public static class TestWorld
{
    public const uint DispatcherUid = 10000;
    public const uint TenantA = 10001;
    public const uint TenantB = 10002;
    private static readonly string[] Executables = ["Master", "TlsDispatcher", "Worker"];

    /// <summary>The OpenSSL engines' TLS policy, shipped beside the executables (OPENSSL_CONF of the children).</summary>
    private const string OpenSslPolicy = "dispatch-openssl.cnf";
    private static readonly string[] BuildFiles = ["Directory.Build.props", "Directory.Packages.props"];
    private static readonly Lazy<string> Published = new(FindPublished);
    private static readonly Lazy<string> Staged = new(Stage);
    private static readonly string RunDirectory = Path.Combine("/var/lib/dispatch-tests", $"run-{Environment.ProcessId}-{Guid.NewGuid():N}"[..24]);

    public static string RepoRoot =>
        typeof(TestWorld).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().First(a => a.Key == "RepoRoot").Value!;

    /// <summary>The staged binaries (Master, TlsDispatcher, Worker side by side).</summary>
    public static string AppDirectory => Staged.Value;

    /// <summary>
    /// Where scripts/publish.sh put the three native executables (artifacts/bin): checked once to hold
    /// all three, none older than the sources they are built from.
    /// </summary>
    public static string PublishedDirectory => Published.Value;

    /// <summary>The published Master, run in place (for <c>check</c> and the command line; no staging needed).</summary>
    public static string PublishedMaster => Path.Combine(PublishedDirectory, "Master");

    public static bool IsRoot => Environment.UserName == "root" || geteuid() == 0;

    /// <summary>Skips loudly when not root: these tests need real privilege drops.</summary>
    public static void RequireRoot()
    {
        Skip.IfNot(IsRoot, "END-TO-END TEST SKIPPED: must run as root (real uid changes, Landlock, ports); CI runs as root.");
    }

    /// <summary>A new directory for one test, 0755, root-owned.</summary>
    public static string NewTestDirectory(string name)
    {
        var dir = Path.Combine(RunDirectory, $"{name}-{Guid.NewGuid():N}"[..Math.Min(name.Length + 9, 60)]);
        Directory.CreateDirectory(dir);
        File.SetUnixFileMode(RunDirectory, (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(dir, (UnixFileMode)0b111_101_101);
        return dir;
    }

    /// <summary>Creates a tenant's document root owned by <paramref name="uid"/> with mode 0700, holding the given files.</summary>
    public static string NewTenantTree(string parent, string name, uint uid, IReadOnlyDictionary<string, string> files)
    {
        var root = Path.Combine(parent, name);
        Directory.CreateDirectory(root);
        foreach (var (relative, content) in files)
        {
            var path = Path.Combine(root, relative);
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllText(path, content);
        }

        Chown(root, uid, recursive: true);
        File.SetUnixFileMode(root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return root;
    }

    public static void Chown(string path, uint uid, bool recursive)
    {
        if (lchown(path, uid, uid) != 0)
            throw new IOException($"chown {path}: errno {Marshal.GetLastPInvokeError()}");
        if (recursive && Directory.Exists(path))
        {
            foreach (var entry in Directory.EnumerateFileSystemEntries(path, "*", SearchOption.AllDirectories))
                lchown(entry, uid, uid);
        }
    }

    /// <summary>
    /// Copies certs-sample into <paramref name="parent"/>/certs as certbot leaves a live directory:
    /// root-owned, keys 0600, live/ symlinks into archive/. Returns the path of live/.
    /// </summary>
    public static string InstallSampleCertificates(string parent)
    {
        var certs = Path.Combine(parent, "certs");
        var r = Tools.Run("cp", "-a", Path.Combine(RepoRoot, "certs-sample"), certs);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Equal(0, Tools.Run("chown", "-R", "root:root", certs).ExitCode);
        Assert.Equal(0, Tools.Run("chmod", "-R", "go-w", certs).ExitCode);
        foreach (var key in Directory.EnumerateFiles(Path.Combine(certs, "archive"), "privkey*.pem", SearchOption.AllDirectories))
            File.SetUnixFileMode(key, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return Path.Combine(certs, "live");
    }

    /// <summary>
    /// Starts a tenant's Python app, <paramref name="script"/> with <paramref name="args"/>, as tenant A (setpriv: its uid
    /// and gid, no supplementary groups), and returns it once it has printed its first line; the caller reads that line
    /// (<c>listening</c>, or the port it took) from <paramref name="firstLine"/> and stops the process.
    /// </summary>
    public static Process StartTenantApp(string script, out string? firstLine, params string[] args)
    {
        var psi = new ProcessStartInfo("setpriv", [$"--reuid={TenantA}", $"--regid={TenantA}", "--clear-groups", "/usr/bin/python3", script, .. args])
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        var app = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {script}");
        firstLine = app.StandardOutput.ReadLine();
        return app;
    }

    public static string CaPath => Path.Combine(RepoRoot, "certs-sample", "ca.pem");

    private static readonly Lazy<System.Security.Cryptography.X509Certificates.X509Certificate2> SampleCa =
        new(() => System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadCertificateFromFile(CaPath));

    /// <summary>What a .NET client of the sample trusts: the sample CA (<see cref="CaPath"/>) alone, revocation not checked (it names no CRL).</summary>
    public static System.Security.Cryptography.X509Certificates.X509ChainPolicy SampleCaChainPolicy() => new()
    {
        TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust,
        CustomTrustStore = { SampleCa.Value },
        RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck,
    };

    public static int FreePort()
    {
        using var l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        l.Start();
        return ((System.Net.IPEndPoint)l.LocalEndpoint).Port;
    }

    private static string FindPublished()
    {
        var published = Path.Combine(RepoRoot, "artifacts", "bin");
        const string Hint = "run scripts/publish.sh (run-tests.sh does it before the tests): the end-to-end tests run the published NativeAOT executables, what ships";
        // The newest input of the publish: a source, project or build file of the executables.
        var sources = BuildFiles.Select(f => new FileInfo(Path.Combine(RepoRoot, f)))
            .Concat(new DirectoryInfo(Path.Combine(RepoRoot, "src")).EnumerateFiles("*", SearchOption.AllDirectories)
                .Where(f => f.Extension is ".cs" or ".csproj" or ".json" && !f.FullName.Contains("/bin/", StringComparison.Ordinal) && !f.FullName.Contains("/obj/", StringComparison.Ordinal)))
            .Where(f => f.Exists)
            .MaxBy(f => f.LastWriteTimeUtc)!;
        foreach (var exe in Executables)
        {
            var file = new FileInfo(Path.Combine(published, exe));
            if (!file.Exists)
                throw new InvalidOperationException($"{exe} is not published at {published}: {Hint}.");
            if (File.Exists(Path.Combine(published, exe + ".dll")))
                throw new InvalidOperationException($"{published} holds {exe}.dll: not a NativeAOT publish; {Hint}.");
            if (file.LastWriteTimeUtc < sources.LastWriteTimeUtc)
                throw new InvalidOperationException($"{file.FullName} ({file.LastWriteTimeUtc:u}) is older than {sources.FullName} ({sources.LastWriteTimeUtc:u}): {Hint}.");
        }

        if (!File.Exists(Path.Combine(published, OpenSslPolicy)))
            throw new InvalidOperationException($"{OpenSslPolicy} is not published at {published}: {Hint}.");
        return published;
    }

    private static string Stage()
    {
        RemoveStaleRuns();
        var app = Path.Combine(RunDirectory, "app");
        Directory.CreateDirectory(app);
        foreach (var exe in Executables)
            File.Copy(Path.Combine(PublishedDirectory, exe), Path.Combine(app, exe), overwrite: true);
        File.Copy(Path.Combine(PublishedDirectory, OpenSslPolicy), Path.Combine(app, OpenSslPolicy), overwrite: true);

        foreach (var dir in new[] { "/var/lib/dispatch-tests", RunDirectory, app })
            File.SetUnixFileMode(dir, (UnixFileMode)0b111_101_101);
        foreach (var exe in Executables)
            File.SetUnixFileMode(Path.Combine(app, exe), (UnixFileMode)0b111_101_101);
        return app;
    }

    /// <summary>
    /// Removes the directories of earlier test runs (about 550 MB each: 73 runs had filled 18 GB here), but the newest
    /// one, kept to read after a failure; never one whose process still runs (a run beside this one), nor one under a
    /// mount point (the workers' chroots mount in namespaces of their own; this only guards against a mount left by hand).
    /// </summary>
    private static void RemoveStaleRuns()
    {
        const string Root = "/var/lib/dispatch-tests";
        if (!Directory.Exists(Root))
            return;
        var mounts = File.ReadLines("/proc/self/mountinfo").Select(line => line.Split(' ')[4]).ToArray();
        var stale = new DirectoryInfo(Root).EnumerateDirectories("run-*")
            .Where(d => d.Name.Split('-') is [_, var pid, _] && !Directory.Exists("/proc/" + pid))
            .Where(d => !mounts.Any(m => m == d.FullName || m.StartsWith(d.FullName + "/", StringComparison.Ordinal)))
            .OrderByDescending(d => d.LastWriteTimeUtc)
            .Skip(1);
        foreach (var dir in stale)
        {
            try
            {
                dir.Delete(recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                Console.Error.WriteLine($"TestWorld: could not remove the earlier run {dir.FullName}: {e.Message}");
            }
        }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int lchown(string path, uint owner, uint group);

    [DllImport("libc")]
    private static extern uint geteuid();
}
