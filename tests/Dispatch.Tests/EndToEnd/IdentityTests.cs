using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// Identity vhosts (<c>"identity": "authenticated"</c>): the dispatcher reads the first request over TLS, verifies
/// its Basic credentials against an htpasswd file (bcrypt from <c>htpasswd -B</c>, SHA-crypt from
/// <c>openssl passwd</c>) and hands the session to that login's pool; the worker verifies every request again.
/// Real processes, real clients (curl -u, openssl s_client, .NET HttpClient).
/// </summary>
public sealed class IdentityTests : IDisposable
{
    private const string Vhost = "a.localhost";
    private readonly ITestOutputHelper _output;
    private readonly List<IDisposable> _cleanup = [];

    public IdentityTests(ITestOutputHelper output) => _output = output;

    private static string Master => Path.Combine(TestWorld.AppDirectory, "Master");

    private sealed record Setup(DispatchInstance Dispatch, int TlsPort, string Directory, string Credentials, string Socket);

    private static string Htpasswd(string login, string password)
    {
        var r = Tools.Run("htpasswd", "-nbB", "-C", "10", login, password);
        Assert.True(r.ExitCode == 0, "htpasswd (apache2-utils) is needed: " + r.Stderr);
        return r.Stdout.Trim();
    }

    private static string ShaCrypt(string login, string password)
    {
        var r = Tools.Run("openssl", "passwd", "-6", password);
        Assert.True(r.ExitCode == 0, r.Stderr);
        return $"{login}:{r.Stdout.Trim()}";
    }

    private static void WriteCredentials(string path, params string[] lines)
    {
        File.WriteAllText(path + ".tmp", string.Join('\n', lines) + "\n");
        File.SetUnixFileMode(path + ".tmp", UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        File.Move(path + ".tmp", path, overwrite: true);
    }

    private Setup Start(string name, Action<JsonObject>? adjust = null)
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory(name);

        // One shared tree: a public index, and a directory per login readable by that login only.
        var root = Path.Combine(dir, "files");
        Directory.CreateDirectory(root);
        File.WriteAllText(Path.Combine(root, "index.html"), "shared index\n");
        foreach (var (login, uid) in new[] { ("alice", TestWorld.TenantA), ("bob", TestWorld.TenantB) })
        {
            var home = Path.Combine(root, login);
            Directory.CreateDirectory(home);
            File.WriteAllText(Path.Combine(home, "secret.txt"), $"{login}'s secret\n");
            TestWorld.Chown(home, uid, recursive: true);
            File.SetUnixFileMode(home, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            File.SetUnixFileMode(Path.Combine(home, "secret.txt"), UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }

        var cgi = Path.Combine(dir, "cgi");
        Directory.CreateDirectory(cgi);
        File.WriteAllText(Path.Combine(cgi, "id.sh"), "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nid -u\n");
        File.SetUnixFileMode(Path.Combine(cgi, "id.sh"), (UnixFileMode)0b111_101_101);

        var credentials = Path.Combine(dir, "users.htpasswd");
        WriteCredentials(credentials, "# logins of a.localhost", Htpasswd("alice", "alice-pw"), ShaCrypt("bob", "bob-pw"));

        var live = TestWorld.InstallSampleCertificates(dir);
        var httpPort = TestWorld.FreePort();
        var tlsPort = TestWorld.FreePort();
        var socket = Path.Combine(dir, "control.sock");
        var config = new JsonObject
        {
            ["listen"] = new JsonArray(
                new JsonObject { ["endpoint"] = $"127.0.0.1:{httpPort}", ["protocol"] = "http" },
                new JsonObject { ["endpoint"] = $"127.0.0.1:{tlsPort}", ["protocol"] = "tls" }),
            ["dispatcher"] = new JsonObject { ["user"] = TestWorld.DispatcherUid.ToString(CultureInfo.InvariantCulture), ["headerTimeout"] = "5s" },
            ["control"] = new JsonObject { ["socket"] = socket },
            ["pools"] = new JsonObject
            {
                ["u-alice"] = new JsonObject { ["user"] = $"{TestWorld.TenantA}" },
                ["u-bob"] = new JsonObject { ["user"] = $"{TestWorld.TenantB}" },
            },
            ["vhosts"] = new JsonObject
            {
                [Vhost] = new JsonObject
                {
                    ["identity"] = "authenticated",
                    ["credentials"] = credentials,
                    ["realm"] = "Shared files",
                    ["users"] = new JsonObject { ["alice"] = "u-alice", ["bob"] = "u-bob" },
                    ["root"] = root,
                    ["cgi"] = new JsonObject { ["/cgi-bin/"] = cgi },
                    ["tls"] = "terminate",
                    ["certDirs"] = new JsonArray(Path.Combine(live, Vhost)),
                },
            },
            ["jailProbe"] = new JsonObject { ["threads"] = 8 },
        };
        adjust?.Invoke(config);
        var dispatch = DispatchInstance.StartReady(dir, config, _output);
        _cleanup.Add(dispatch);
        return new Setup(dispatch, tlsPort, dir, credentials, socket);
    }

    private static (int Status, string Body, string Headers) Get(Setup s, string path, string? user, params string[] extra)
    {
        string[] auth = user is null ? [] : ["-u", user];
        return Tools.Curl([.. auth, .. extra, "--cacert", TestWorld.CaPath, "--resolve", $"{Vhost}:{s.TlsPort}:127.0.0.1", $"https://{Vhost}:{s.TlsPort}{path}"]);
    }

    /// <summary>
    /// Pids of live processes of this instance (the master's descendants, from /proc: other tests and other runs on the
    /// machine use the same tenant uids) whose real uid is <paramref name="uid"/>.
    /// </summary>
    private static List<int> ProcessesOf(DispatchInstance dispatch, uint uid)
    {
        var parents = new Dictionary<int, (int Parent, string Uid)>();
        foreach (var pid in Directory.EnumerateDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsAsciiDigit)).Select(n => int.Parse(n!, CultureInfo.InvariantCulture)))
        {
            try
            {
                var status = Tools.Status($"/proc/{pid}/status");
                parents[pid] = (int.Parse(status["PPid"], CultureInfo.InvariantCulture), status["Uid"].Split('\t')[0]);
            }
            catch (IOException)
            {
                // Gone meanwhile.
            }
        }

        bool Descends(int pid)
        {
            for (var p = pid; parents.TryGetValue(p, out var entry) && p > 1; p = entry.Parent)
            {
                if (entry.Parent == dispatch.MasterPid)
                    return true;
            }

            return false;
        }

        return [.. parents.Where(kv => kv.Value.Uid == uid.ToString(CultureInfo.InvariantCulture) && Descends(kv.Key)).Select(kv => kv.Key)];
    }

    private static int StatusWorkers(Setup s)
    {
        var r = Tools.Run(Master, "status", "--json", "--socket", s.Socket);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(r.Stdout);
        return doc.RootElement.GetProperty("pools").EnumerateArray().Sum(p => p.GetProperty("workers").GetArrayLength());
    }

    [SkippableFact]
    public void Two_logins_reach_workers_with_their_own_uids_and_read_only_their_own_files()
    {
        var s = Start("identity-uids");
        var alice = Get(s, "/cgi-bin/id.sh", "alice:alice-pw");
        var bob = Get(s, "/cgi-bin/id.sh", "bob:bob-pw");
        _output.WriteLine($"alice: {alice.Status} uid {alice.Body.Trim()}; bob: {bob.Status} uid {bob.Body.Trim()}");
        Assert.Equal((200, TestWorld.TenantA.ToString(CultureInfo.InvariantCulture)), (alice.Status, alice.Body.Trim()));
        Assert.Equal((200, TestWorld.TenantB.ToString(CultureInfo.InvariantCulture)), (bob.Status, bob.Body.Trim()));

        Assert.Equal((200, "alice's secret"), (Get(s, "/alice/secret.txt", "alice:alice-pw").Status, Get(s, "/alice/secret.txt", "alice:alice-pw").Body.Trim()));
        Assert.Equal((200, "bob's secret"), (Get(s, "/bob/secret.txt", "bob:bob-pw").Status, Get(s, "/bob/secret.txt", "bob:bob-pw").Body.Trim()));
        Assert.Equal(404, Get(s, "/bob/secret.txt", "alice:alice-pw").Status);
        Assert.Equal(404, Get(s, "/alice/secret.txt", "bob:bob-pw").Status);

        // Each login's worker runs as that login's uid.
        var alicePid = s.Dispatch.WorkerPid("u-alice");
        var bobPid = s.Dispatch.WorkerPid("u-bob");
        Assert.StartsWith($"{TestWorld.TenantA}\t", Tools.Status($"/proc/{alicePid}/status")["Uid"], StringComparison.Ordinal);
        Assert.StartsWith($"{TestWorld.TenantB}\t", Tools.Status($"/proc/{bobPid}/status")["Uid"], StringComparison.Ordinal);
        s.Dispatch.WaitForLine(new Regex(@"alice logged in; handed to pool u-alice"));
    }

    [SkippableFact]
    public async Task HttpClient_keeps_one_connection_for_many_requests_of_one_login()
    {
        var s = Start("identity-httpclient");
        using var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
                await socket.ConnectAsync(IPAddress.Loopback, s.TlsPort, ct);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
            SslOptions = new System.Net.Security.SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, cert, _, _) => cert is not null && ValidatesAgainstSampleCa(cert),
            },
        };
        using var client = new HttpClient(handler) { DefaultRequestVersion = HttpVersion.Version11 };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("alice:alice-pw")));
        for (var i = 0; i < 5; i++)
        {
            var body = await client.GetStringAsync(new Uri($"https://{Vhost}:{s.TlsPort}/cgi-bin/id.sh"));
            Assert.Equal(TestWorld.TenantA.ToString(CultureInfo.InvariantCulture), body.Trim());
        }

        // One login, one connection: the dispatcher verified it once.
        var logins = Regex.Count(s.Dispatch.Log, "alice logged in");
        _output.WriteLine($"5 requests, {logins} login(s) through the dispatcher");
        Assert.Equal(1, logins);
    }

    private static bool ValidatesAgainstSampleCa(System.Security.Cryptography.X509Certificates.X509Certificate cert)
    {
        using var chain = new System.Security.Cryptography.X509Certificates.X509Chain();
        chain.ChainPolicy.TrustMode = System.Security.Cryptography.X509Certificates.X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(File.ReadAllText(TestWorld.CaPath)));
        chain.ChainPolicy.RevocationMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck;
        using var c2 = new System.Security.Cryptography.X509Certificates.X509Certificate2(cert);
        return chain.Build(c2);
    }

    [SkippableFact]
    public void A_missing_or_wrong_password_gets_401_from_the_dispatcher_and_starts_no_worker()
    {
        var s = Start("identity-401");
        var none = Get(s, "/", null);
        var wrong = Get(s, "/", "alice:not-her-password");
        var unknown = Get(s, "/", "mallory:whatever");
        _output.WriteLine($"no credentials: {none.Status}; wrong password: {wrong.Status}; unknown login: {unknown.Status}");
        foreach (var r in new[] { none, wrong, unknown })
        {
            Assert.Equal(401, r.Status);
            Assert.Contains("WWW-Authenticate: Basic realm=\"Shared files\"", r.Headers, StringComparison.Ordinal);
        }

        // No worker: none in status, no process of either login's uid, and no worker start in the master's log.
        Assert.Equal(0, StatusWorkers(s));
        Assert.Empty(ProcessesOf(s.Dispatch, TestWorld.TenantA));
        Assert.Empty(ProcessesOf(s.Dispatch, TestWorld.TenantB));
        Assert.DoesNotMatch(new Regex(@"Worker \d+ for pool u-"), s.Dispatch.Log);
        s.Dispatch.WaitForLine(new Regex(@"login alice failed \(wrong password\); 401"));
        s.Dispatch.WaitForLine(new Regex(@"login mallory failed \(no such login\); 401"));

        // Plain HTTP is only ever redirected.
        var plain = Tools.Curl("-u", "alice:alice-pw", "-H", $"Host: {Vhost}", $"http://127.0.0.1:{s.Dispatch.HttpPort}/alice/secret.txt");
        Assert.Equal(301, plain.Status);
        Assert.Contains($"Location: https://{Vhost}:{s.TlsPort}/alice/secret.txt", plain.Headers, StringComparison.Ordinal);
        Assert.Equal(0, StatusWorkers(s));

        // The same checks see a worker once a login succeeds (so they can fail).
        Assert.Equal(200, Get(s, "/", "alice:alice-pw").Status);
        var alice = s.Dispatch.WorkerPid("u-alice");
        Assert.Contains(alice, ProcessesOf(s.Dispatch, TestWorld.TenantA));
        Assert.Equal(1, StatusWorkers(s));
    }

    [SkippableFact]
    public void Switching_logins_on_a_keep_alive_connection_gets_421_and_the_connection_closes()
    {
        var s = Start("identity-421");
        string Basic(string user) => Convert.ToBase64String(Encoding.UTF8.GetBytes(user));
        var requests =
            $"GET /cgi-bin/id.sh HTTP/1.1\r\nHost: {Vhost}\r\nAuthorization: Basic {Basic("alice:alice-pw")}\r\n\r\n" +
            $"GET /bob/secret.txt HTTP/1.1\r\nHost: {Vhost}\r\nAuthorization: Basic {Basic("bob:bob-pw")}\r\n\r\n" +
            $"GET /alice/secret.txt HTTP/1.1\r\nHost: {Vhost}\r\nAuthorization: Basic {Basic("alice:alice-pw")}\r\n\r\n";
        var r = Tools.RunWithInput(requests, "openssl", ["s_client", "-quiet", "-connect", $"127.0.0.1:{s.TlsPort}", "-servername", Vhost, "-CAfile", TestWorld.CaPath, "-ign_eof"]);
        var output = r.Stdout;
        _output.WriteLine(output);
        var statuses = Regex.Matches(output, @"HTTP/1\.1 (\d{3})").Select(m => m.Groups[1].Value).ToList();
        Assert.Equal(["200", "421"], statuses);
        Assert.Contains(TestWorld.TenantA.ToString(CultureInfo.InvariantCulture), output, StringComparison.Ordinal);
        Assert.DoesNotContain("bob's secret", output, StringComparison.Ordinal);
        Assert.DoesNotContain("alice's secret", output, StringComparison.Ordinal); // the connection closed after the 421
        s.Dispatch.WaitForLine(new Regex(@"refused with 421: authenticated as bob, and this worker serves login alice only"));

        // The same with a wrong password for the worker's own login.
        var again = Tools.RunWithInput(
            $"GET / HTTP/1.1\r\nHost: {Vhost}\r\nAuthorization: Basic {Basic("alice:alice-pw")}\r\n\r\nGET / HTTP/1.1\r\nHost: {Vhost}\r\nAuthorization: Basic {Basic("alice:guess")}\r\n\r\n",
            "openssl",
            ["s_client", "-quiet", "-connect", $"127.0.0.1:{s.TlsPort}", "-servername", Vhost, "-CAfile", TestWorld.CaPath, "-ign_eof"]);
        Assert.Equal(["200", "421"], Regex.Matches(again.Stdout, @"HTTP/1\.1 (\d{3})").Select(m => m.Groups[1].Value).ToList());
    }

    [SkippableFact]
    public void A_burst_of_wrong_passwords_from_one_address_is_throttled_while_another_address_logs_in()
    {
        var s = Start("identity-throttle", c => c["vhosts"]![Vhost]!["loginLimits"] = new JsonObject { ["perAddress"] = 3, ["perLogin"] = 50, ["window"] = "10m" });
        var burst = new List<int>();
        for (var i = 0; i < 8; i++)
            burst.Add(Get(s, "/", $"bob:guess-{i}", "--interface", "127.0.0.1").Status);
        var other = Get(s, "/cgi-bin/id.sh", "alice:alice-pw", "--interface", "127.0.0.2");
        var sameAddressRightPassword = Get(s, "/", "alice:alice-pw", "--interface", "127.0.0.1");
        _output.WriteLine($"burst from 127.0.0.1: {string.Join(' ', burst)}");
        _output.WriteLine($"alice from 127.0.0.2: {other.Status} uid {other.Body.Trim()}");
        _output.WriteLine($"alice from 127.0.0.1 (throttled address): {sameAddressRightPassword.Status}");
        Assert.Equal([401, 401, 401], burst.Take(3));
        Assert.All(burst.Skip(3), status => Assert.Equal(429, status));
        Assert.Equal((200, TestWorld.TenantA.ToString(CultureInfo.InvariantCulture)), (other.Status, other.Body.Trim()));
        Assert.Equal(429, sameAddressRightPassword.Status);
        s.Dispatch.WaitForLine(new Regex(@"login bob throttled: too many failed logins for this address; 429"));
    }

    [SkippableFact]
    public void Credentials_file_edits_apply_on_reload_and_a_broken_file_keeps_the_last_good_one()
    {
        var s = Start("identity-reload");
        Assert.Equal(200, Get(s, "/", "alice:alice-pw").Status);
        var aliceWorker = s.Dispatch.WorkerPid("u-alice");

        // A new password for alice; bob unchanged.
        WriteCredentials(s.Credentials, Htpasswd("alice", "alice-new"), ShaCrypt("bob", "bob-pw"));
        Assert.Equal(0, Tools.Run("kill", "-HUP", s.Dispatch.MasterPid.ToString(CultureInfo.InvariantCulture)).ExitCode);
        s.Dispatch.WaitForLine(new Regex(@"Configuration reloaded .*version 2.*workers retired for u-alice"));
        s.Dispatch.WaitForLine(new Regex($@"Worker {aliceWorker} of pool u-alice exited"));
        var old = Get(s, "/", "alice:alice-pw").Status;
        var fresh = Get(s, "/cgi-bin/id.sh", "alice:alice-new");
        _output.WriteLine($"after the edit: old password {old}, new password {fresh.Status}");
        Assert.Equal(401, old);
        Assert.Equal((200, TestWorld.TenantA.ToString(CultureInfo.InvariantCulture)), (fresh.Status, fresh.Body.Trim()));

        // A broken line: refused with the file and line, the last good credentials keep serving.
        WriteCredentials(s.Credentials, Htpasswd("alice", "alice-newer"), "bob $6$no-colon");
        Assert.Equal(0, Tools.Run("kill", "-HUP", s.Dispatch.MasterPid.ToString(CultureInfo.InvariantCulture)).ExitCode);
        s.Dispatch.WaitForLine(new Regex($@"rejected, the last good configuration keeps serving: .*{Regex.Escape(s.Credentials)}:2: not 'login:hash'"));
        Assert.Equal(200, Get(s, "/", "alice:alice-new").Status);
        Assert.Equal(401, Get(s, "/", "alice:alice-newer").Status);

        // check says the same, naming file and line.
        var check = Tools.Run(Master, "check", "--config", s.Dispatch.ConfigPath);
        _output.WriteLine(check.Stdout + check.Stderr);
        Assert.NotEqual(0, check.ExitCode);
        Assert.Contains($"{s.Credentials}:2: not 'login:hash'", check.Stdout + check.Stderr, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_credentials_file_others_can_write_or_an_unsupported_hash_is_refused_with_file_and_line()
    {
        TestWorld.RequireRoot();
        var dir = TestWorld.NewTestDirectory("identity-check");
        var root = TestWorld.NewTenantTree(dir, "files", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "x" });
        var live = TestWorld.InstallSampleCertificates(dir);
        var credentials = Path.Combine(dir, "users.htpasswd");
        var config = new JsonObject
        {
            ["listen"] = new JsonArray(new JsonObject { ["endpoint"] = $"127.0.0.1:{TestWorld.FreePort()}", ["protocol"] = "tls" }),
            ["dispatcher"] = new JsonObject { ["user"] = TestWorld.DispatcherUid.ToString(CultureInfo.InvariantCulture) },
            ["pools"] = new JsonObject { ["u-alice"] = new JsonObject { ["user"] = $"{TestWorld.TenantA}" } },
            ["vhosts"] = new JsonObject
            {
                [Vhost] = new JsonObject
                {
                    ["identity"] = "authenticated",
                    ["credentials"] = credentials,
                    ["users"] = new JsonObject { ["alice"] = "u-alice" },
                    ["root"] = root,
                    ["tls"] = "terminate",
                    ["certDirs"] = new JsonArray(Path.Combine(live, Vhost)),
                },
            },
        };
        var path = Path.Combine(dir, "check.json");
        File.WriteAllText(path, config.ToJsonString());
        string Check()
        {
            var r = Tools.Run(Master, "check", "--config", path);
            _output.WriteLine(r.Stdout + r.Stderr);
            return r.ExitCode + " " + r.Stdout + r.Stderr;
        }

        WriteCredentials(credentials, Htpasswd("alice", "pw"));
        Assert.StartsWith("0 ", Check(), StringComparison.Ordinal);

        File.SetUnixFileMode(credentials, (UnixFileMode)0b110_110_100);
        Assert.Contains($"{credentials}: writable by group or others", Check(), StringComparison.Ordinal);

        WriteCredentials(credentials, "# comment", "", "alice:$apr1$abc$defghijklmnopqrstuvwx.");
        Assert.Contains($"{credentials}:3: the hash of 'alice' is not bcrypt", Check(), StringComparison.Ordinal);

        WriteCredentials(credentials, Htpasswd("alice", "pw"), Htpasswd("alice", "pw2"));
        Assert.Contains($"{credentials}:2: login 'alice' is listed twice", Check(), StringComparison.Ordinal);

        WriteCredentials(credentials, Htpasswd("bob", "pw"));
        Assert.Contains("vhosts:a.localhost:users:alice: login 'alice' is not in", Check(), StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_user_template_makes_a_pool_per_login_with_uids_from_a_range_or_passwd()
    {
        // Range: the n-th login of the file gets FROM + n - 1; a disabled login (carol:!) keeps its slot and cannot log in.
        var s = Start("identity-template", c =>
        {
            c["pools"] = new JsonObject();
            var v = c["vhosts"]![Vhost]!.AsObject();
            v.Remove("users");
            v["userTemplate"] = new JsonObject { ["pool"] = "t-{login}", ["user"] = "10021-10029", ["maxWorkers"] = 2 };
        });
        WriteCredentials(s.Credentials, "carol:!", Htpasswd("alice", "alice-pw"), ShaCrypt("bob", "bob-pw"));
        Assert.Equal(0, Tools.Run("kill", "-HUP", s.Dispatch.MasterPid.ToString(CultureInfo.InvariantCulture)).ExitCode);
        s.Dispatch.WaitForLine(new Regex(@"Configuration reloaded .*version 2"));
        var alice = Get(s, "/cgi-bin/id.sh", "alice:alice-pw");
        var bob = Get(s, "/cgi-bin/id.sh", "bob:bob-pw");
        var carol = Get(s, "/", "carol:anything");
        _output.WriteLine($"template range: alice {alice.Status} uid {alice.Body.Trim()}, bob {bob.Status} uid {bob.Body.Trim()}, carol (disabled) {carol.Status}");
        Assert.Equal((200, "10022"), (alice.Status, alice.Body.Trim()));
        Assert.Equal((200, "10023"), (bob.Status, bob.Body.Trim()));
        Assert.Equal(401, carol.Status);
        s.Dispatch.WaitForLine(new Regex(@"Worker \d+ for pool t-alice ready \(uid 10022, gid 10022\)"));

        // Template pools get every check of an explicit pool: a range reaching the dispatcher's uid is refused.
        var config = JsonNode.Parse(File.ReadAllText(s.Dispatch.ConfigPath))!.AsObject();
        config["vhosts"]![Vhost]!["userTemplate"]!["user"] = $"{TestWorld.DispatcherUid - 1}-{TestWorld.DispatcherUid + 5}";
        var bad = Path.Combine(s.Directory, "bad.json");
        File.WriteAllText(bad, config.ToJsonString());
        var check = Tools.Run(Master, "check", "--config", bad);
        _output.WriteLine(check.Stdout + check.Stderr);
        Assert.NotEqual(0, check.ExitCode);
        Assert.Contains($"vhosts:{Vhost}:userTemplate:user: uid {TestWorld.DispatcherUid} is the dispatcher's uid", check.Stdout + check.Stderr, StringComparison.Ordinal);
        config["vhosts"]![Vhost]!["userTemplate"]!["user"] = "0-5";
        File.WriteAllText(bad, config.ToJsonString());
        check = Tools.Run(Master, "check", "--config", bad);
        _output.WriteLine(check.Stdout + check.Stderr);
        Assert.Contains($"vhosts:{Vhost}:userTemplate:user: uid 1 is below security:minUid 1000", check.Stdout + check.Stderr, StringComparison.Ordinal);

        // passwd: the uid of the passwd entry named like the login.
        const string login = "dspidtest";
        _ = Tools.Run("userdel", login);
        var add = Tools.Run("useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--uid", "10031", "--user-group", login);
        Assert.True(add.ExitCode == 0, "useradd (passwd) is needed: " + add.Stderr);
        try
        {
            config["vhosts"]![Vhost]!["userTemplate"]!["user"] = "passwd";
            WriteCredentials(s.Credentials, Htpasswd(login, "pw"));
            File.WriteAllText(s.Dispatch.ConfigPath + ".tmp", config.ToJsonString());
            File.Move(s.Dispatch.ConfigPath + ".tmp", s.Dispatch.ConfigPath, overwrite: true);
            s.Dispatch.WaitForLine(new Regex(@"Configuration reloaded .*version 3"));
            var mine = Get(s, "/cgi-bin/id.sh", $"{login}:pw");
            _output.WriteLine($"template passwd: {login} {mine.Status} uid {mine.Body.Trim()}");
            Assert.Equal((200, "10031"), (mine.Status, mine.Body.Trim()));
            Assert.Equal(401, Get(s, "/", "alice:alice-pw").Status); // no longer in the file
        }
        finally
        {
            _ = Tools.Run("userdel", login);
        }
    }

    public void Dispose()
    {
        foreach (var d in _cleanup)
            d.Dispose();
    }
}
