using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>The <c>fastcgi</c> and <c>tryFiles</c> settings: each mistake named with its JSON path, the same in <c>check</c> and <c>run</c>.</summary>
public sealed class FastCgiConfigTests(ITestOutputHelper output)
{
    private static string BuiltMaster => TestWorld.PublishedMaster;

    public static TheoryData<string, string, string> BrokenConfigs => new()
    {
        { "neither", """{"fastcgi":{"connectTimeout":"5s"}}""", "vhosts:a.localhost:fastcgi: needs exactly one of \"socket\"" },
        { "both", """{"fastcgi":{"socket":"/run/php/a.sock","spawn":{"program":"/usr/sbin/php-fpm8.2"}}}""", "vhosts:a.localhost:fastcgi: needs exactly one of \"socket\"" },
        { "not an object", """{"fastcgi":"/run/php/a.sock"}""", "vhosts:a.localhost:fastcgi: an object such as" },
        { "relative socket", """{"fastcgi":{"socket":"run/a.sock"}}""", "vhosts:a.localhost:fastcgi:socket: 'run/a.sock' is not an absolute path to a socket file" },
        { "dot-dot socket", """{"fastcgi":{"socket":"/run/../tmp/a.sock"}}""", "vhosts:a.localhost:fastcgi:socket: '/run/../tmp/a.sock' contains '.' or '..' segments" },
        { "long socket", "{\"fastcgi\":{\"socket\":\"/" + new string('s', 120) + ".sock\"}}", "vhosts:a.localhost:fastcgi:socket: '/" + new string('s', 120) + ".sock' is longer than a Unix socket path may be (107 bytes)" },
        { "typo", """{"fastcgi":{"socket":"/run/php/a.sock","readTimout":"5s"}}""", "vhosts:a.localhost:fastcgi:readTimout: unknown setting" },
        { "bad timeout", """{"fastcgi":{"socket":"/run/php/a.sock","readTimeout":"soon"}}""", "vhosts:a.localhost:fastcgi:readTimeout: 'soon' is not a duration" },
        { "body size is the vhost's", """{"fastcgi":{"socket":"/run/php/a.sock","maxBodySize":"64M"}}""", "vhosts:a.localhost:fastcgi:maxBodySize: unknown setting" },
        { "missing program", """{"fastcgi":{"spawn":{"program":"/usr/sbin/php-fpm0.0"}}}""", "vhosts:a.localhost:fastcgi:spawn:program: '/usr/sbin/php-fpm0.0' does not exist" },
        { "no program", """{"fastcgi":{"spawn":{"maxChildren":3}}}""", "vhosts:a.localhost:fastcgi:spawn:program: required" },
        { "not executable", """{"fastcgi":{"spawn":{"program":"/etc/passwd"}}}""", "vhosts:a.localhost:fastcgi:spawn:program: '/etc/passwd' is not executable" },
        { "children", """{"fastcgi":{"spawn":{"program":"/usr/sbin/php-fpm8.2","maxChildren":0}}}""", "vhosts:a.localhost:fastcgi:spawn:maxChildren: '0' is not an integer in 1..256" },
        { "php value injection", """{"fastcgi":{"spawn":{"program":"/usr/sbin/php-fpm8.2","phpAdminValues":{"memory_limit":"1G\n[evil]"}}}}""", "vhosts:a.localhost:fastcgi:spawn:phpAdminValues:memory_limit: a single-line value" },
        { "php name", """{"fastcgi":{"spawn":{"program":"/usr/sbin/php-fpm8.2","phpAdminValues":{"Memory Limit":"1G"}}}}""", "vhosts:a.localhost:fastcgi:spawn:phpAdminValues:Memory Limit: 'Memory Limit' is not a PHP directive name" },
        { "tryFiles not a list", """{"tryFiles":"/index.php"}""", "vhosts:a.localhost:tryFiles: a list such as" },
        { "tryFiles middle", """{"tryFiles":["$uri","/index.php","$uri/"]}""", "vhosts:a.localhost:tryFiles:1: '/index.php' is not $uri or $uri/" },
        { "tryFiles fallback", """{"tryFiles":["$uri","index.php"]}""", "vhosts:a.localhost:tryFiles:1: 'index.php' is not a fallback" },
        { "tryFiles dots", """{"tryFiles":["$uri","/../index.php"]}""", "vhosts:a.localhost:tryFiles:1: '/../index.php' is not a fallback" },
        { "tryFiles php without fastcgi", """{"tryFiles":["$uri","/index.php"]}""", "vhosts:a.localhost:tryFiles:1: the fallback '/index.php' is a PHP script: the vhost needs a \"fastcgi\" section" },
    };

    [Theory]
    [MemberData(nameof(BrokenConfigs))]
    public void Check_and_run_reject_a_broken_fastcgi_config_with_the_same_error(string name, string patch, string expected)
    {
        var dir = Directory.CreateTempSubdirectory("dispatch-fastcgi-check-").FullName;
        try
        {
            var config = DispatchInstance.CheckableConfig(dir, TestWorld.FreePort());
            foreach (var (key, value) in JsonNode.Parse(patch)!.AsObject().ToList())
                config["vhosts"]!["a.localhost"]![key] = value?.DeepClone();
            config["control"] = new JsonObject { ["socket"] = Path.Combine(dir, "control.sock") };
            var file = Path.Combine(dir, "dispatch.json");
            File.WriteAllText(file, config.ToJsonString());
            var check = Tools.Run(BuiltMaster, "check", "--config", file);
            output.WriteLine($"{name}: check exit {check.ExitCode}\n{check.Stderr}{check.Stdout}");
            Assert.NotEqual(0, check.ExitCode);
            Assert.Contains($"{file}:1: {expected}", check.Stderr, StringComparison.Ordinal);

            if (TestWorld.IsRoot)
            {
                var run = Tools.Run(BuiltMaster, "--config", file);
                output.WriteLine($"{name}: run exit {run.ExitCode}\n{run.Stderr}{run.Stdout}");
                Assert.NotEqual(0, run.ExitCode);
                Assert.Contains($"{file}:1: {expected}", run.Stderr + run.Stdout, StringComparison.Ordinal);
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Check_accepts_both_modes_and_a_front_controller()
    {
        var dir = Directory.CreateTempSubdirectory("dispatch-fastcgi-check-").FullName;
        try
        {
            var config = DispatchInstance.CheckableConfig(dir, TestWorld.FreePort());
            config["vhosts"]!["a.localhost"]!["fastcgi"] = new JsonObject { ["socket"] = "/run/php/a.sock", ["connectTimeout"] = "2s", ["readTimeout"] = "5m" };
            config["vhosts"]!["a.localhost"]!["tryFiles"] = new JsonArray("$uri", "$uri/", "/index.php");
            config["vhosts"]!["b.localhost"]!["fastcgi"] = new JsonObject
            {
                ["spawn"] = new JsonObject { ["program"] = "/usr/sbin/php-fpm8.2", ["maxChildren"] = 8, ["idleTimeout"] = "30s", ["phpAdminValues"] = new JsonObject { ["memory_limit"] = "256M" } },
            };
            config["vhosts"]!["b.localhost"]!["tryFiles"] = new JsonArray("$uri", "=404");
            var file = Path.Combine(dir, "dispatch.json");
            File.WriteAllText(file, config.ToJsonString());
            var check = Tools.Run(BuiltMaster, "check", "--config", file);
            output.WriteLine(check.Stderr + check.Stdout);
            Assert.Equal(0, check.ExitCode);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
