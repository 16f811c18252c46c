using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// PHP through FastCGI, for real: Debian's php-fpm started by the tenant's jailed worker (as the tenant, in its
/// Landlock domain and cgroup, gone with the worker), and the same application on an operator-run php-fpm socket.
/// </summary>
public sealed class FastCgiTests : IDisposable
{
    private const string PhpFpm = "/usr/sbin/php-fpm8.2";

    private const string Index = """
        <?php
        if ($_SERVER['REQUEST_METHOD'] === 'POST') {
            $in = fopen('php://input', 'rb');
            $hash = hash_init('sha256');
            $n = 0;
            while (!feof($in)) { $chunk = fread($in, 1 << 16); $n += strlen($chunk); hash_update($hash, $chunk); }
            echo "posted $n " . hash_final($hash) . "\n";
            exit;
        }
        $path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
        if (preg_match('#^/(\d{4})/([a-z0-9-]+)$#', $path, $m)) {
            echo "post {$m[2]} of {$m[1]}\n";
        } else {
            http_response_code(404);
            echo "no route for $path\n";
        }
        echo "script={$_SERVER['SCRIPT_NAME']} uid=" . posix_getuid() . "\n";
        """;

    private const string Info = """
        <?php
        header('Content-Type: text/plain');
        echo "uid=" . posix_getuid() . " pid=" . getmypid() . " ppid=" . posix_getppid() . "\n";
        foreach (array_filter(explode(',', $_GET['read'] ?? '')) as $f) {
            $data = @file_get_contents($f);
            echo "read $f: " . ($data === false ? "denied" : "READ " . strlen($data)) . "\n";
        }
        """;

    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;
    private Process? _fpm;

    public FastCgiTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public void The_worker_runs_php_fpm_as_the_tenant_in_its_jail_and_cgroup_and_it_goes_with_the_worker()
    {
        TestWorld.RequireRoot();
        Assert.True(File.Exists(PhpFpm), $"{PhpFpm} is missing: apt-get install -y php8.2-fpm php8.2-cli");
        var dir = TestWorld.NewTestDirectory("fastcgi");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, Files());
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B secret" });
        var cgroupRoot = $"dispatch-test-{Guid.NewGuid():N}"[..26];
        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        config["cgroup"] = new JsonObject { ["root"] = cgroupRoot, ["required"] = true };
        config["pools"]!["a"]!["maxWorkers"] = 1;
        config["pools"]!["a"]!["cgroup"] = new JsonObject { ["pidsMax"] = 200 };
        var vhost = config["vhosts"]!["a.localhost"]!;
        vhost["index"] = new JsonArray("index.php", "index.html");
        vhost["tryFiles"] = new JsonArray("$uri", "$uri/", "/index.php");
        vhost["fastcgi"] = new JsonObject
        {
            ["spawn"] = new JsonObject
            {
                ["program"] = PhpFpm,
                ["maxChildren"] = 3,
                ["phpAdminValues"] = new JsonObject { ["post_max_size"] = "64M" },
            },
        };
        vhost["maxBodySize"] = "64M";
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        var d = _dispatch;
        var url = $"http://127.0.0.1:{d.HttpPort}";

        var post = Tools.Curl("-H", "Host: a.localhost", $"{url}/2024/hello-world");
        Assert.Equal(200, post.Status);
        Assert.Equal($"post hello-world of 2024\nscript=/index.php uid={TestWorld.TenantA}\n", post.Body);
        Assert.Equal("body{}", Tools.Curl("-H", "Host: a.localhost", $"{url}/style.css").Body);
        var worker = d.WorkerPid("a");

        // PHP reads neither the system's accounts nor the other tenant's files.
        var info = Tools.Curl("-H", "Host: a.localhost", $"{url}/info.php?read=/etc/passwd,{b}/index.html,{a}/style.css");
        Assert.Equal(200, info.Status);
        Assert.Contains($"uid={TestWorld.TenantA} ", info.Body, StringComparison.Ordinal);
        Assert.Contains("read /etc/passwd: denied\n", info.Body, StringComparison.Ordinal);
        Assert.Contains($"read {b}/index.html: denied\n", info.Body, StringComparison.Ordinal);
        Assert.Contains($"read {a}/style.css: READ 6\n", info.Body, StringComparison.Ordinal);

        // 50 MB up, checksum compared.
        var upload = Path.Combine(dir, "upload.bin");
        var bytes = RandomNumberGenerator.GetBytes(50 * 1024 * 1024);
        File.WriteAllBytes(upload, bytes);
        var posted = Tools.Curl("-H", "Host: a.localhost", "-H", "Content-Type: application/octet-stream", "--data-binary", "@" + upload, $"{url}/upload");
        Assert.Equal(200, posted.Status);
        Assert.Equal($"posted {bytes.Length} {Convert.ToHexStringLower(SHA256.HashData(bytes))}\n", posted.Body);

        // php-fpm: the worker's child (its master) and grandchildren (its pool's processes), all the tenant's, all in
        // the worker's cgroup, which is the pool's.
        var fpm = Descendants(worker);
        _output.WriteLine($"worker {worker}, php-fpm processes: {string.Join(", ", fpm.Select(p => $"{p} {Comm(p)}"))}");
        Assert.Contains(fpm, p => Comm(p).StartsWith("php-fpm", StringComparison.Ordinal));
        var workerGroup = File.ReadAllText($"/proc/{worker}/cgroup");
        Assert.Contains($"/{cgroupRoot}/a", workerGroup, StringComparison.Ordinal);
        foreach (var pid in fpm)
        {
            Assert.Equal(workerGroup, File.ReadAllText($"/proc/{pid}/cgroup"));
            var status = Tools.Status($"/proc/{pid}/status");
            Assert.StartsWith($"{TestWorld.TenantA}\t{TestWorld.TenantA}\t{TestWorld.TenantA}\t{TestWorld.TenantA}", status["Uid"], StringComparison.Ordinal);
            Assert.Equal("1", status["NoNewPrivs"]);
        }

        // Killed outright, php-fpm is started again and serves.
        var fpmMaster = fpm.First(p => ParentOf(p) == worker);
        Assert.Equal(0, kill(fpmMaster, 9));
        d.WaitForLine(new Regex($@"php-fpm {fpmMaster} of a\.localhost ended .*starting it again"));
        d.WaitForLine(new Regex(@"php-fpm \d+ of a\.localhost ready again"));
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"{url}/2024/again").Status);
        fpm = Descendants(worker);
        Assert.Contains(fpm, p => Comm(p).StartsWith("php-fpm", StringComparison.Ordinal));

        // The worker killed outright (no chance to clean up): its php-fpm is told by the kernel (PR_SET_PDEATHSIG) and
        // takes its children with it.
        Assert.Equal(0, kill(worker, 9));
        Assert.True(Tools.Eventually(() => fpm.All(p => !Directory.Exists($"/proc/{p}") || File.ReadAllText($"/proc/{p}/stat").Contains(") Z ", StringComparison.Ordinal))), "php-fpm processes outlived a killed worker");

        // A new worker, a new php-fpm; the master stops it: every php-fpm process goes with it.
        Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"{url}/2024/third").Status);
        worker = d.WorkerPid("a", skip: 1);
        fpm = Descendants(worker);
        Assert.Contains(fpm, p => Comm(p).StartsWith("php-fpm", StringComparison.Ordinal));
        d.Dispose();
        Assert.True(Tools.Eventually(() => fpm.All(p => !Directory.Exists($"/proc/{p}"))), "php-fpm processes outlived the worker");
    }

    [SkippableFact]
    public void The_same_application_runs_on_an_operator_run_php_fpm_socket()
    {
        TestWorld.RequireRoot();
        Assert.True(File.Exists(PhpFpm), $"{PhpFpm} is missing: apt-get install -y php8.2-fpm php8.2-cli");
        var dir = TestWorld.NewTestDirectory("fastcgi-sock");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, Files());
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });

        // The operator's php-fpm pool for tenant a: its own uid, a socket only that uid can use.
        var run = Path.Combine(dir, "run-a");
        Directory.CreateDirectory(run);
        TestWorld.Chown(run, TestWorld.TenantA, recursive: false);
        File.SetUnixFileMode(run, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var socket = Path.Combine(run, "php.sock");
        var conf = Path.Combine(dir, "fpm-a.conf");
        File.WriteAllText(conf, $"""
            [global]
            daemonize = no
            error_log = /dev/null
            [a]
            listen = {socket}
            listen.mode = 0600
            pm = ondemand
            pm.max_children = 2
            """);
        _fpm = Process.Start(new ProcessStartInfo("setpriv", [$"--reuid={TestWorld.TenantA}", $"--regid={TestWorld.TenantA}", "--clear-groups", "--", PhpFpm, "-F", "-O", "-y", conf]) { UseShellExecute = false, RedirectStandardError = true })!;
        _fpm.ErrorDataReceived += (_, e) => _output.WriteLine("php-fpm: " + e.Data);
        _fpm.BeginErrorReadLine();
        Assert.True(Tools.Eventually(() => File.Exists(socket)), "php-fpm did not create its socket");

        var config = DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b);
        var vhost = config["vhosts"]!["a.localhost"]!;
        vhost["index"] = new JsonArray("index.php", "index.html");
        vhost["tryFiles"] = new JsonArray("$uri", "$uri/", "/index.php");
        vhost["fastcgi"] = new JsonObject { ["socket"] = socket, ["readTimeout"] = "30s" };
        _dispatch = DispatchInstance.StartReady(dir, config, _output);
        var url = $"http://127.0.0.1:{_dispatch.HttpPort}";

        var post = Tools.Curl("-H", "Host: a.localhost", $"{url}/2024/hello-world");
        Assert.Equal(200, post.Status);
        Assert.Equal($"post hello-world of 2024\nscript=/index.php uid={TestWorld.TenantA}\n", post.Body);
        Assert.Equal("body{}", Tools.Curl("-H", "Host: a.localhost", $"{url}/style.css").Body);
        Assert.Equal(404, Tools.Curl("-H", "Host: a.localhost", $"{url}/nothing/here").Status);

        _fpm.Kill(entireProcessTree: true);
        _fpm.WaitForExit();
        Assert.Equal(502, Tools.Curl("-H", "Host: a.localhost", $"{url}/2024/hello-world").Status);
        _dispatch.WaitForLine(new Regex(@"FastCGI .*php\.sock.* of .*a\.localhost.*cannot connect"));
    }

    public void Dispose()
    {
        if (_fpm is { HasExited: false })
            _fpm.Kill(entireProcessTree: true);
        _fpm?.Dispose();
        _dispatch?.Dispose();
    }

    private static Dictionary<string, string> Files() => new()
    {
        ["index.php"] = Index,
        ["info.php"] = Info,
        ["style.css"] = "body{}",
    };

    private static string Comm(int pid) => File.ReadAllText($"/proc/{pid}/comm").Trim();

    private static int ParentOf(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        return int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1], CultureInfo.InvariantCulture);
    }

    private static List<int> Descendants(int root)
    {
        var all = Directory.EnumerateDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsAsciiDigit)).Select(n => int.Parse(n!, CultureInfo.InvariantCulture)).ToList();
        var parents = new Dictionary<int, int>();
        foreach (var pid in all)
        {
            try
            {
                parents[pid] = ParentOf(pid);
            }
            catch (IOException)
            {
            }
        }

        var found = new List<int>();
        var frontier = new Queue<int>([root]);
        while (frontier.TryDequeue(out var p))
        {
            foreach (var child in parents.Where(kv => kv.Value == p).Select(kv => kv.Key))
            {
                found.Add(child);
                frontier.Enqueue(child);
            }
        }

        return found;
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);
}
