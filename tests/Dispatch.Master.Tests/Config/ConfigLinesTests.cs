using Dispatch.Master.Config;

namespace Dispatch.Master.Tests.Config;

/// <summary>
/// The line of each setting of a config file (<see cref="ConfigLines"/>), by the path its errors name: properties,
/// array elements, nested objects, a setting the file lacks (its nearest enclosing one's line), comments and a byte
/// order mark; and <see cref="ConfigLoader.Load"/>'s errors carrying their line, as <c>check</c> prints them.
/// </summary>
public sealed class ConfigLinesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("dispatch-config-lines-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private const string Sample = """
        {
          // the listeners
          "listen": [
            { "protocol": "http", "endpoint": "127.0.0.1:8080" },
            {
              "protocol": "tls",
              "endpoint": "127.0.0.1:8443"
            }
          ],
          "vhosts": {
            "A.example": { "root": "/srv/a",
              "certDirs": [ "/etc/a",
                            "/etc/b" ] },
          },
        }
        """;

    [Theory]
    [InlineData("listen", 3)]
    [InlineData("listen:0", 4)]
    [InlineData("listen:0:endpoint", 4)]
    [InlineData("listen:1", 5)]
    [InlineData("listen:1:protocol", 6)]
    [InlineData("listen:1:endpoint", 7)]
    [InlineData("vhosts", 10)]
    [InlineData("vhosts:a.example", 11)]
    [InlineData("vhosts:a.example:root", 11)]
    [InlineData("vhosts:a.example:certDirs:0", 12)]
    [InlineData("vhosts:a.example:certDirs:1", 13)]
    [InlineData("vhosts:a.example:pool", 11)]
    [InlineData("listen:7:endpoint", 3)]
    public void Each_setting_has_its_line_and_a_missing_one_its_enclosing_settings(string path, int line)
    {
        var lines = ConfigLines.Parse([0xEF, 0xBB, 0xBF, .. System.Text.Encoding.UTF8.GetBytes(Sample)]);
        Assert.Equal(line, lines.LineOf(path));
    }

    [Fact]
    public void A_path_the_file_has_nothing_of_has_no_line()
    {
        var lines = ConfigLines.Parse(System.Text.Encoding.UTF8.GetBytes(Sample));
        Assert.Null(lines.LineOf("pools:a:user"));
        Assert.Null(lines.LineOf(string.Empty));
        Assert.Null(ConfigLines.Read(Path.Combine(_dir, "missing.json")).LineOf("listen"));
    }

    [Fact]
    public void The_loaders_errors_name_the_line_of_their_setting()
    {
        var path = Path.Combine(_dir, "dispatch.json");
        File.WriteAllText(path, """
            {
              "listen": [ { "protocol": "http", "endpoint": "127.0.0.1:http" } ],
              "pools": {
                "a": {
                  "user": "root"
                }
              },
              "vhosts": {
                "a.example": {
                  "pool": "nope",
                  "root": "/nonexistent/www"
                }
              }
            }
            """);
        var (config, errors) = ConfigLoader.Load(path);
        Assert.Null(config);
        var text = errors.Select(e => e.ToString()).ToList();
        Assert.Contains(text, t => t.StartsWith($"{path}:2: listen:0:endpoint: '127.0.0.1:http' is not an address:port", StringComparison.Ordinal));
        Assert.Contains(text, t => t.StartsWith($"{path}:5: pools:a:user: a pool must not run as root", StringComparison.Ordinal));
        Assert.Contains(text, t => t.StartsWith($"{path}:10: vhosts:a.example:pool: no pool named 'nope'", StringComparison.Ordinal));
        Assert.Contains(text, t => t.StartsWith($"{path}:11: vhosts:a.example:root: directory '/nonexistent/www' does not exist", StringComparison.Ordinal));
        // A required setting of a section the file lacks entirely has nothing to point at: no line, as before.
        Assert.Contains(text, t => t.StartsWith($"{path}: dispatcher:user: required", StringComparison.Ordinal));
        Assert.All(errors.Where(e => !e.Path.StartsWith("dispatcher", StringComparison.Ordinal)), e => Assert.NotNull(e.Line));
    }
}
