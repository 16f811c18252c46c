using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// Every config error of the per-vhost HTTP features (docs/vhost-features.md), from one broken config: <c>Master check</c>
/// lists them all with file, JSON path and reason, and <c>Master run</c> refuses the same config with the same lines.
/// </summary>
public sealed partial class VhostFeaturesConfigTests
{
    private readonly ITestOutputHelper _output;

    public VhostFeaturesConfigTests(ITestOutputHelper output) => _output = output;

    private static string BuiltMaster => TestWorld.PublishedMaster;

    private const string Path404 = "is not the URL path of a file under the vhost's root such as /errors/404.html (no query, '%', '.' or '..' segments)";

    public static readonly string[] Expected =
    [
        "vhosts:a.localhost:maxBodySize: '50 MB' is not a size from 1 byte to 64g such as 1048576, 512k, 50m or 1g",
        "vhosts:a.localhost:compression: 'yes' is neither true, false nor an object with minSize, types, precompressed, level",
        "vhosts:a.localhost:headers:Connection: Connection is a hop-by-hop header: it belongs to one connection, not to the vhost's responses",
        "vhosts:a.localhost:headers:Transfer-Encoding: Transfer-Encoding is a hop-by-hop header: it belongs to one connection, not to the vhost's responses",
        "vhosts:a.localhost:headers:Content-Length: Content-Length is set for each response by the server or the handler and cannot be fixed per vhost",
        "vhosts:a.localhost:headers:Vary: Vary is set for each response by the server or the handler and cannot be fixed per vhost",
        "vhosts:a.localhost:headers:X Bad: 'X Bad' is not a header name (letters, digits and !#$%&'*+-.^_`|~)",
        "vhosts:a.localhost:headers:X-Empty: the value of X-Empty is empty (a header value, or remove the header)",
        "vhosts:a.localhost:headers:X-Inject: the value of X-Inject contains CR or LF (header injection)",
        "vhosts:a.localhost:headers:X-Control: the value of X-Control contains a control character or a character outside ISO-8859-1",
        "vhosts:a.localhost:headers:X-Space: the value of X-Space starts or ends with white space",
        "vhosts:a.localhost:headers:X-Long: the value of X-Long is 4097 characters long (at most 4096)",
        "vhosts:a.localhost:headers:X-Object: a header value is a string, not an object or array",
        "vhosts:a.localhost:errorPages:200: '200' is not an error status (400-599)",
        "vhosts:a.localhost:errorPages:abc: 'abc' is not an error status (400-599)",
        $"vhosts:a.localhost:errorPages:404: 'errors/404.html' {Path404}",
        "vhosts:a.localhost:errorPages:0404: '0404' is not written as a status: write 404 (three digits: no sign, leading zero or space)",
        "vhosts:a.localhost:errorPages:+500: '+500' is not written as a status: write 500 (three digits: no sign, leading zero or space)",
        "vhosts:a.localhost:errorPages: 502: ' 502' is not written as a status: write 502 (three digits: no sign, leading zero or space)",
        $"vhosts:a.localhost:errorPages:500: '/../secret.html' {Path404}",
        $"vhosts:a.localhost:errorPages:502: '/e/502.html?x' {Path404}",
        $"vhosts:a.localhost:errorPages:503: '/errors/' {Path404}",
        "vhosts:a.localhost:canonicalHost: 'other.localhost' is not a name of this vhost (its name or one of its aliases, not a wildcard)",
        "vhosts:a.localhost:redirects:0:from: required (a URL path such as /old)",
        "vhosts:a.localhost:redirects:1:from: 'old' is not a URL path such as /old (starting with '/', no query, fragment, space or control character)",
        "vhosts:a.localhost:redirects:2:to: 'javascript:alert(1)' is neither a path such as /new nor an absolute http or https URL (ASCII, no space, fragment or user info)",
        "vhosts:a.localhost:redirects:3:status: '200' is not a redirect status (301, 302, 303, 307 or 308)",
        "vhosts:a.localhost:redirects:4:match: 'regex' is not a match (exact or prefix)",
        "vhosts:a.localhost:redirects:5:to: '/same' redirects to itself",
        "vhosts:a.localhost:redirects:6:to: '/p/q' lies under the prefix '/p' it redirects from: the client would be redirected forever",
        "vhosts:a.localhost:redirects:8:from: '/dup' is already redirected by vhosts:a.localhost:redirects:7",
        "vhosts:a.localhost:redirects:9:stauts: unknown setting (expected one of: from, to, status, match)",
        "vhosts:a.localhost:redirects:10: a redirect is an object with from, to, status and match",
        "vhosts:a.localhost:redirects:11:to: required (a path such as /new or an absolute http(s) URL)",
        "vhosts:a.localhost:redirects:12:to: '//evil.example/x' is neither a path such as /new nor an absolute http or https URL (ASCII, no space, fragment or user info)",
        "vhosts:a.localhost:redirects:13:from: '/a b' is not a URL path such as /old (starting with '/', no query, fragment, space or control character)",
        "vhosts:b.localhost:maxBodySize: a size such as 50m, not an object or array",
        "vhosts:b.localhost:compression:minSize: 'big' is not an integer in 0..1048576",
        "vhosts:b.localhost:compression:types:0: image/png is already compressed (images, audio, video, woff fonts, archives, PDF) or streamed: compressing it again costs CPU and saves nothing",
        "vhosts:b.localhost:compression:types:1: 'text/HTML' is not a lower-case media type such as text/css or text/*",
        "vhosts:b.localhost:compression:types:2: font/woff2 is already compressed (images, audio, video, woff fonts, archives, PDF) or streamed: compressing it again costs CPU and saves nothing",
        "vhosts:b.localhost:compression:types:3: '*/*' is not a lower-case media type such as text/css or text/*",
        "vhosts:b.localhost:compression:level: 'max' is not a compression level (fastest, optimal or smallest)",
        "vhosts:b.localhost:compression:precompressed: 'sometimes' is not true or false",
        "vhosts:b.localhost:compression:gzip: unknown setting (expected one of: minSize, types, precompressed, level)",
        "vhosts:b.localhost:headers: an object of header names and values such as { \"Strict-Transport-Security\": \"max-age=63072000\" }",
        "vhosts:b.localhost:errorPages: an object of statuses and file paths such as { \"404\": \"/errors/404.html\" }",
        "vhosts:b.localhost:redirects: a list of redirects such as [{ \"from\": \"/old\", \"to\": \"/new\", \"status\": 301 }]",
        "vhosts:b.localhost:canonicalHost: '*.b.localhost' is not a name of this vhost (its name or one of its aliases, not a wildcard)",
        "vhosts:c.localhost:maxBodySize: '0' is not a size from 1 byte to 64g such as 1048576, 512k, 50m or 1g",
        "vhosts:c.localhost:compression:types: a list of media types such as [\"text/*\", \"application/json\"]",
        "vhosts:d.localhost:maxBodySize: '65g' is not a size from 1 byte to 64g such as 1048576, 512k, 50m or 1g",
        "vhosts:d.localhost:compression:types:0: video/* is already compressed (images, audio, video, woff fonts, archives, PDF) or streamed: compressing it again costs CPU and saves nothing",
        "vhosts:d.localhost:compression:types:1: text/event-stream is already compressed (images, audio, video, woff fonts, archives, PDF) or streamed: compressing it again costs CPU and saves nothing",
    ];

    private static JsonObject BrokenConfig(string dir)
    {
        var config = DispatchInstance.CheckableConfig(dir);
        var vhosts = config["vhosts"]!.AsObject();
        var va = vhosts["a.localhost"]!.AsObject();
        va["maxBodySize"] = "50 MB";
        va["compression"] = "yes";
        va["headers"] = new JsonObject
        {
            ["Strict-Transport-Security"] = "max-age=63072000",
            ["Connection"] = "close",
            ["Transfer-Encoding"] = "chunked",
            ["Content-Length"] = "5",
            ["Vary"] = "Cookie",
            ["X Bad"] = "1",
            ["X-Empty"] = string.Empty,
            ["X-Inject"] = "a\r\nSet-Cookie: x=1",
            ["X-Control"] = "a\u0001b",
            ["X-Space"] = " a",
            ["X-Long"] = new string('x', 4097),
            ["X-Object"] = new JsonObject { ["k"] = "v" },
        };
        va["errorPages"] = new JsonObject
        {
            ["200"] = "/ok.html",
            ["abc"] = "/x.html",
            ["404"] = "errors/404.html",
            ["500"] = "/../secret.html",
            ["502"] = "/e/502.html?x",
            ["503"] = "/errors/",
            ["504"] = "/errors/504.html",

            // Each reads as a status given above: one vhost's status named twice, which check let through and the
            // worker then refused the whole pool for.
            ["0404"] = "/errors/404.html",
            ["+500"] = "/errors/500.html",
            [" 502"] = "/errors/502.html",
        };
        va["canonicalHost"] = "other.localhost";
        va["redirects"] = new JsonArray(
            new JsonObject { ["to"] = "/new" },
            new JsonObject { ["from"] = "old", ["to"] = "/new" },
            new JsonObject { ["from"] = "/a", ["to"] = "javascript:alert(1)" },
            new JsonObject { ["from"] = "/b", ["to"] = "/c", ["status"] = 200 },
            new JsonObject { ["from"] = "/d", ["to"] = "/e", ["match"] = "regex" },
            new JsonObject { ["from"] = "/same", ["to"] = "/same" },
            new JsonObject { ["from"] = "/p", ["to"] = "/p/q", ["match"] = "prefix" },
            new JsonObject { ["from"] = "/dup", ["to"] = "/x" },
            new JsonObject { ["from"] = "/dup", ["to"] = "/y" },
            new JsonObject { ["from"] = "/t", ["to"] = "/u", ["stauts"] = 301 },
            "/string",
            new JsonObject { ["from"] = "/z" },
            new JsonObject { ["from"] = "/o", ["to"] = "//evil.example/x" },
            new JsonObject { ["from"] = "/a b", ["to"] = "https://b.example/ok" });
        var vb = vhosts["b.localhost"]!.AsObject();
        vb["maxBodySize"] = new JsonObject { ["a"] = 1 };
        vb["compression"] = new JsonObject
        {
            ["minSize"] = "big",
            ["types"] = new JsonArray("image/png", "text/HTML", "font/woff2", "*/*", "image/svg+xml"),
            ["level"] = "max",
            ["precompressed"] = "sometimes",
            ["gzip"] = true,
        };
        vb["headers"] = "HSTS";
        vb["errorPages"] = "/404.html";
        vb["redirects"] = "/old";
        vb["canonicalHost"] = "*.b.localhost";
        vhosts["c.localhost"] = new JsonObject { ["pool"] = "a", ["root"] = Path.Combine(dir, "a"), ["maxBodySize"] = "0", ["compression"] = new JsonObject { ["types"] = "text/*" } };
        vhosts["d.localhost"] = new JsonObject { ["pool"] = "b", ["root"] = Path.Combine(dir, "b"), ["maxBodySize"] = "65g", ["compression"] = new JsonObject { ["types"] = new JsonArray("video/*", "text/event-stream") } };
        return config;
    }

    [Fact]
    public void Check_lists_every_feature_error_with_its_path_and_reason()
    {
        var dir = Directory.CreateTempSubdirectory("dispatch-check-").FullName;
        try
        {
            var file = Path.Combine(dir, "dispatch.json");
            File.WriteAllText(file, BrokenConfig(dir).ToJsonString());
            var r = Tools.Run(BuiltMaster, "check", "--config", file);
            _output.WriteLine(r.Stderr + r.Stdout);
            Assert.Equal(1, r.ExitCode);
            var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList();
            foreach (var expected in Expected)
                Assert.Contains($"{file}:1: {expected}", lines);

            // Nothing else: each good value (HSTS, the 504 page, the https redirect, image/svg+xml) passed.
            Assert.Equal(Expected.Length, lines.Count);
            Assert.Contains($"{Expected.Length} error(s); configuration rejected", r.Stdout, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>
    /// A config good but for an error-page key written otherwise than as its status: it passed <c>check</c> (0404 read as
    /// 404), and then the pool's every worker refused the two pages for 404 (issue 13). Only that key is named.
    /// </summary>
    [Theory]
    [InlineData("0404")]
    [InlineData("+404")]
    [InlineData(" 404")]
    public void Check_refuses_an_error_page_key_that_repeats_a_status_in_another_spelling(string key)
    {
        var dir = Directory.CreateTempSubdirectory("dispatch-check-").FullName;
        try
        {
            var config = DispatchInstance.CheckableConfig(dir);
            config["vhosts"]!["a.localhost"]!["errorPages"] = new JsonObject { ["404"] = "/errors/404.html", [key] = "/errors/other.html" };
            var file = Path.Combine(dir, "dispatch.json");
            File.WriteAllText(file, config.ToJsonString());
            var r = Tools.Run(BuiltMaster, "check", "--config", file);
            _output.WriteLine(r.Stderr + r.Stdout);
            Assert.Equal(1, r.ExitCode);
            Assert.Equal(
                [$"{file}:1: vhosts:a.localhost:errorPages:{key}: '{key}' is not written as a status: write 404 (three digits: no sign, leading zero or space)"],
                r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));

            // The same config with the key written as itself, alone, is good.
            config["vhosts"]!["a.localhost"]!["errorPages"] = new JsonObject { ["404"] = "/errors/404.html" };
            File.WriteAllText(file, config.ToJsonString());
            r = Tools.Run(BuiltMaster, "check", "--config", file);
            _output.WriteLine(r.Stderr + r.Stdout);
            Assert.Equal(0, r.ExitCode);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [SkippableFact]
    public void Run_refuses_the_same_config_with_the_same_errors()
    {
        TestWorld.RequireRoot();
        var dir = Directory.CreateTempSubdirectory("dispatch-run-").FullName;
        try
        {
            var file = Path.Combine(dir, "dispatch.json");
            File.WriteAllText(file, BrokenConfig(dir).ToJsonString());
            var r = Tools.Run(BuiltMaster, "--config", file);
            _output.WriteLine(r.Stderr + r.Stdout);
            Assert.Equal(78, r.ExitCode);
            var logged = ConfigurationError().Matches(r.Stdout + r.Stderr).Select(m => m.Groups[1].Value.TrimEnd('\r')).ToList();
            Assert.Equal(Expected.Select(e => $"{file}:1: {e}").Order(StringComparer.Ordinal), logged.Order(StringComparer.Ordinal));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [GeneratedRegex("Configuration error: (.*)")]
    private static partial Regex ConfigurationError();
}
