using Dispatch.Master.Config;

namespace Dispatch.Master.Tests.Config;

/// <summary>
/// <see cref="ConfigLoader.Load"/> on configs the fuzzer (docs/fuzzing.md) found or could: whatever the file holds, the
/// answer is a config or errors that each name a path and a reason, never an exception.
/// </summary>
public sealed class ConfigLoaderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("dispatch-config-loader-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private List<ConfigError> Errors(string json)
    {
        var path = Path.Combine(_dir, "dispatch.json");
        File.WriteAllText(path, json);
        var (config, errors) = ConfigLoader.Load(path);
        Assert.Null(config);
        return errors;
    }

    /// <summary>
    /// Found by the config fuzzer in CI: <c>"certDir": ""</c> made the vhost terminate TLS, and the empty string reached
    /// <c>Path.GetFullPath</c> in CertificateLoader, which threw ArgumentException out of Load: <c>check</c> crashed
    /// instead of naming the setting.
    /// </summary>
    [Theory]
    [InlineData("")]
    [InlineData("live/a.example")]
    public void A_certDir_that_is_not_an_absolute_path_is_an_error_at_its_path(string certDir)
    {
        var errors = Errors("""{"vhosts":{"a.example":{"certDir":""" + $"\"{certDir}\"" + "}}}");
        Assert.Contains(errors, e => e.Path == "vhosts:a.example:certDir" && e.Reason == $"'{certDir}' is not an absolute path");
    }

    /// <summary>
    /// Found by the config fuzzer in CI: <c>"certDir": "/"</c> lost its only character to the trailing-slash trim, and
    /// the empty string reached <c>Path.GetFullPath</c> in PathSafety, which threw ArgumentException out of Load. The
    /// root as a path, in any setting that names a directory or a file, is an error at that path.
    /// </summary>
    [Theory]
    [InlineData("vhosts:a.example:certDir", """{"vhosts":{"a.example":{"certDir":"/"}}}""")]
    [InlineData("vhosts:a.example:certDirs:0", """{"vhosts":{"a.example":{"certDirs":["//"]}}}""")]
    [InlineData("vhosts:a.example:certDir", """{"vhosts":{"a.example":{"tls":"passthrough","certDir":"/"}}}""")]
    [InlineData("vhosts:a.example:certDir", """{"vhosts":{"a.example":{"tls":"passthrough","certDir":"/\u0000"}}}""")]
    [InlineData("log:file", """{"log":{"file":"/"}}""")]
    [InlineData("vhosts:a.example:accessLog", """{"vhosts":{"a.example":{"accessLog":"/"}}}""")]
    [InlineData("vhosts:a.example:errorLog", """{"vhosts":{"a.example":{"errorLog":"//"}}}""")]
    public void The_root_as_a_path_is_an_error_at_its_path(string path, string json)
    {
        var errors = Errors(json);
        Assert.Contains(errors, e => e.Path == path);
    }

    [Theory]
    [InlineData("""{"reload":{"onChange":"sometimes"}}""", "reload:onChange", "'sometimes' is not true or false")]
    [InlineData("""{"reload":{"onEdit":false}}""", "reload:onEdit", "unknown setting")]
    public void A_reload_setting_that_is_not_a_boolean_or_not_known_is_an_error_at_its_path(string json, string path, string reason)
    {
        var errors = Errors(json);
        Assert.Contains(errors, e => e.Path == path && e.Reason.StartsWith(reason, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("""{"vhosts":{"a.example":{"accessLog":"/var/log/a.log","accessLogFormat":"JSON"}}}""", "'JSON' is not an access log format (combined or json)")]
    [InlineData("""{"vhosts":{"a.example":{"accessLog":"/var/log/a.log","accessLogFormat":{"kind":"json"}}}}""", "'accessLogFormat' must be one of combined, json")]
    [InlineData("""{"vhosts":{"a.example":{"accessLogFormat":"json"}}}""", "needs accessLog: without a file of its own")]
    public void An_access_log_format_that_is_not_known_or_has_no_access_log_is_an_error_at_its_path(string json, string reason)
    {
        var errors = Errors(json);
        Assert.Contains(errors, e => e.Path == "vhosts:a.example:accessLogFormat" && e.Reason.StartsWith(reason, StringComparison.Ordinal));
    }

    /// <summary>A NUL makes every path API throw; in a value or in a name, it is one error at that path.</summary>
    [Fact]
    public void A_NUL_in_a_value_or_a_name_is_an_error_at_its_path_once()
    {
        var errors = Errors("""{"vhosts":{"a.example":{"root":"/srv/a\u0000"},"b\u0000.example":{"root":"/srv/b","pool":"b"}},"log":{"file":"/var/log/\u0000"}}""");
        Assert.Equal(
            [
                ("log:file", "the value contains a NUL character (\\u0000)"),
                ("vhosts:a.example:root", "the value contains a NUL character (\\u0000)"),
                ("vhosts:b\\u0000.example", "the name contains a NUL character (\\u0000)"),
            ],
            errors.Select(e => (e.Path, e.Reason)).OrderBy(e => e.Path, StringComparer.Ordinal).ToList());
    }
}
