using System.Reflection;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// docs/dispatch.schema.json against the real loader: at every object of the config the loader checks
/// for unknown keys, the keys it accepts (read from its own error, "unknown setting (expected one of:
/// ...)", by the built Master's <c>check</c>) are exactly the schema's properties there; the schema is a
/// valid 2020-12 schema, samples/dispatch.json validates against it and a typo does not (checked by
/// python3-jsonschema, which ./run-tests.sh installs); and the loader accepts <c>$schema</c>.
/// </summary>
public sealed class ConfigSchemaTests
{
    private const string Unknown = "zzNotAKey";
    private readonly ITestOutputHelper _output;

    public ConfigSchemaTests(ITestOutputHelper output) => _output = output;

    /// <summary>Where the loader checks keys: the config path to put an unknown key at, and the schema's object there.</summary>
    public static TheoryData<string, string> Locations => new()
    {
        { "", "" },
        { "listen:0", "$defs/listener" },
        { "dispatcher", "$defs/dispatcher" },
        { "pools:a", "$defs/pool" },
        { "pools:a:landlock", "$defs/pool/properties/landlock/anyOf/1" },
        { "pools:a:limits", "$defs/pool/properties/limits" },
        { "pools:a:cgroup", "$defs/pool/properties/cgroup" },
        { "pools:a:chroot", "$defs/pool/properties/chroot/anyOf/1" },
        { "vhosts:a.localhost", "$defs/vhost" },
        { "log", "properties/log" },
        { "control", "properties/control" },
        { "metrics", "properties/metrics" },
        { "limits", "properties/limits" },
        { "cgroup", "properties/cgroup" },
        { "modules:m", "properties/modules/additionalProperties" },
        { "vhosts:a.localhost:proxy:/app/", "$defs/vhost/properties/proxy/additionalProperties/anyOf/1" },
    };

    private static string SchemaPath => Path.Combine(TestWorld.RepoRoot, "docs", "dispatch.schema.json");

    private static string BuiltMaster => TestWorld.PublishedMaster;

    [Theory]
    [MemberData(nameof(Locations))]
    public void The_keys_the_loader_accepts_are_exactly_the_schemas(string configPath, string schemaPointer)
    {
        var dir = Directory.CreateTempSubdirectory("dispatch-schema-").FullName;
        try
        {
            var config = ValidConfig(dir);
            JsonNode target = config;
            foreach (var part in configPath.Split(':', StringSplitOptions.RemoveEmptyEntries))
                target = target is JsonArray array ? array[int.Parse(part, System.Globalization.CultureInfo.InvariantCulture)]! : (target[part] ??= new JsonObject());

            target[Unknown] = 1;
            var file = Path.Combine(dir, "dispatch.json");
            File.WriteAllText(file, config.ToJsonString());
            var r = Tools.Run(BuiltMaster, "check", "-c", file);
            _output.WriteLine(r.Stderr);
            var where = configPath.Length == 0 ? Unknown : $"{configPath}:{Unknown}";
            var line = new Regex($@"{Regex.Escape(file)}:1: {Regex.Escape(where)}: unknown setting \(expected one of: (?<keys>[^)]*)\)").Match(r.Stderr);
            Assert.True(line.Success, $"the loader did not refuse {where}:\n{r.Stderr}");
            var loader = line.Groups["keys"].Value.Split(", ").Order(StringComparer.Ordinal).ToList();

            var schema = JsonNode.Parse(File.ReadAllText(SchemaPath))!;
            foreach (var part in schemaPointer.Split('/', StringSplitOptions.RemoveEmptyEntries))
                schema = schema is JsonArray array ? array[int.Parse(part, System.Globalization.CultureInfo.InvariantCulture)]! : schema[part]!;
            Assert.False(schema["additionalProperties"]!.GetValue<bool>(), $"{schemaPointer} allows other keys");
            var keys = schema["properties"]!.AsObject().Select(p => p.Key).Order(StringComparer.Ordinal).ToList();
            Assert.Equal(loader, keys);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void The_sample_validates_against_the_schema_and_a_typo_does_not()
    {
        var sample = Path.Combine(TestWorld.RepoRoot, "samples", "dispatch.json");
        Assert.Equal("../docs/dispatch.schema.json", JsonNode.Parse(File.ReadAllText(sample))!["$schema"]!.GetValue<string>());
        var valid = Validate(sample);
        Assert.True(valid.ExitCode == 0, valid.Stdout + valid.Stderr);

        var dir = Directory.CreateTempSubdirectory("dispatch-schema-").FullName;
        try
        {
            var typo = JsonNode.Parse(File.ReadAllText(sample))!;
            typo["dispatcher"]!["headerTimout"] = "5s";
            var file = Path.Combine(dir, "typo.json");
            File.WriteAllText(file, typo.ToJsonString());
            var invalid = Validate(file);
            Assert.Equal(1, invalid.ExitCode);
            Assert.Contains("headerTimout", invalid.Stdout + invalid.Stderr, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void The_loader_accepts_dollar_schema()
    {
        var dir = Directory.CreateTempSubdirectory("dispatch-schema-").FullName;
        try
        {
            var config = ValidConfig(dir);
            config["$schema"] = "../docs/dispatch.schema.json";
            var file = Path.Combine(dir, "dispatch.json");
            File.WriteAllText(file, config.ToJsonString());
            var r = Tools.Run(BuiltMaster, "check", "-c", file);
            Assert.True(r.ExitCode == 0, r.Stdout + r.Stderr);
            Assert.Contains("configuration OK", r.Stdout, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Validates with Debian's python3-jsonschema (draft 2020-12); exit 0 valid, 1 invalid, anything else: the validator is missing.</summary>
    private static Tools.Result Validate(string file)
    {
        const string Script = """
            import json, sys
            try:
                import jsonschema
            except ImportError:
                sys.exit("python3-jsonschema is not installed: ./run-tests.sh installs it")
            schema = json.load(open(sys.argv[1]))
            jsonschema.Draft202012Validator.check_schema(schema)
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(json.load(open(sys.argv[2]))))
            for e in errors:
                print("/".join(map(str, e.absolute_path)), e.message)
            sys.exit(1 if errors else 0)
            """;
        var r = Tools.Run("/usr/bin/python3", "-c", Script, SchemaPath, file);
        Assert.True(r.ExitCode is 0 or 1, $"the schema validator did not run (exit {r.ExitCode}): {r.Stderr}");
        return r;
    }

    private static JsonObject ValidConfig(string dir) => DispatchInstance.CheckableConfig(dir);
}
