using System.Text;
using System.Text.Json;
using Dispatch.Wire.Payloads;

namespace Dispatch.Tests.Wire.Payloads;

/// <summary>
/// The JSON payloads of the sealed memfds (<see cref="SnapshotJson"/>) as a compromised or broken peer could write them:
/// each case is a well-formed payload with one edit, and each must be refused by the parse with a
/// <see cref="JsonException"/> that names the member, never accepted to fail later as a NullReferenceException or an
/// argument exception far from the boundary.
/// </summary>
public class SnapshotTests
{
    /// <summary>A route snapshot as the master writes it (<c>SnapshotJson.Serialize</c>'s member names and order).</summary>
    private const string Snapshot = """
        {"version":1,"settings":{"headerTimeoutMs":10000,"maxRequestHead":16384,"workerWaitMs":30000,"handshakeTimeoutMs":10000,"sendTimeoutMs":60000,"limits":{"perAddressConnections":1024,"perAddressPerSecond":0,"globalConnections":16384,"globalPerSecond":0}},
        "vhosts":[{"name":"a.example","aliases":["www.a.example"],"pool":"a","tlsMode":"none","certificates":[],"httpMode":"serve","offerH2":true,"engine":"bouncycastle","identity":null},
        {"name":"login.example","aliases":[],"pool":"","tlsMode":"none","certificates":[],"httpMode":"serve","offerH2":false,"engine":"bouncycastle","identity":{"realm":"r","users":[{"login":"alice","hash":"$2y$05$x","pool":"alice"}],"failuresPerAddress":10,"failuresPerLogin":20,"failureWindowMs":60000}}],
        "defaultVhost":null,"httpsPort":443,"pools":[{"name":"a","maxConnectionsPerWorker":0,"oneShot":false,"minSpare":0,"idleTimeoutMs":60000,"tlsHandOff":false}]}
        """;

    /// <summary>A worker's pool settings with every optional part present.</summary>
    private const string Pool = """
        {"name":"a","vhosts":[{"name":"a.example","aliases":["www.a.example"],"root":"/srv/a","directoryListing":false,"index":["index.html"],"cgi":[{"urlPrefix":"/cgi-bin/","directory":"/srv/cgi"}],"cgiTimeoutMs":0,"passthroughCertDir":null,
        "proxy":[{"urlPrefix":"/app/","upstream":"http://127.0.0.1:8080","connectTimeoutMs":0,"readTimeoutMs":0}],"identity":null,
        "fastCgi":{"socket":"","connectTimeoutMs":0,"readTimeoutMs":0,"spawn":{"program":"/usr/sbin/php-fpm8.2","maxChildren":4,"idleTimeoutMs":0,"directory":"/run/d","phpAdminValues":{"memory_limit":"128M"}}},"tryFiles":null,
        "web":{"compression":{"minSize":256,"types":["text/*"],"precompressed":true,"level":"fastest"},"maxBodySize":1048576,"headers":[{"name":"X-A","value":"1"}],"errorPages":[{"status":404,"path":"/404.html"}],"canonicalHost":null,"redirects":[{"from":"/old","to":"/new","status":301,"prefix":false}]}}],
        "oneShot":false,"timeouts":{"sendMs":60000,"keepAliveMs":75000,"requestHeadersMs":30000,"minRequestBodyRate":240,"minResponseRate":240}}
        """;

    [Fact]
    public void The_payloads_the_cases_edit_are_accepted_as_they_are()
    {
        var snapshot = SnapshotJson.ParseSnapshot(Encoding.UTF8.GetBytes(Snapshot));
        Assert.Equal(["www.a.example"], snapshot.Vhosts[0].Aliases);
        Assert.Equal("alice", snapshot.Vhosts[1].Identity!.Users[0].Login);
        var pool = SnapshotJson.ParsePool(Encoding.UTF8.GetBytes(Pool));
        Assert.Equal("128M", pool.Vhosts[0].FastCgi!.Spawn!.PhpAdminValues!["memory_limit"]);
        Assert.Equal(404, pool.Vhosts[0].Web!.ErrorPages[0].Status);
        // And what the master writes reads back the same.
        Assert.Equal(snapshot, SnapshotJson.ParseSnapshot(SnapshotJson.Serialize(snapshot)));
        Assert.Equal(pool, SnapshotJson.ParsePool(SnapshotJson.Serialize(pool)));
    }

    /// <summary>A <c>null</c> where the type says there cannot be one: a list, a list's element, a string, a record.</summary>
    [Theory]
    [InlineData("\"aliases\":[\"www.a.example\"]", "\"aliases\":null", "$.vhosts[0].aliases")]
    [InlineData("\"aliases\":[\"www.a.example\"]", "\"aliases\":[null]", "$.vhosts[0].aliases")]
    [InlineData("\"pool\":\"a\",", "\"pool\":null,", "$.vhosts[0].pool")]
    [InlineData("\"certificates\":[],\"httpMode\":\"serve\",\"offerH2\":true", "\"certificates\":null,\"httpMode\":\"serve\",\"offerH2\":true", "$.vhosts[0].certificates")]
    [InlineData("\"users\":[{", "\"users\":[null,{", "$.vhosts[1].identity.users")]
    [InlineData("\"login\":\"alice\"", "\"login\":null", "$.vhosts[1].identity.users[0].login")]
    [InlineData("\"limits\":{\"perAddressConnections\":1024,\"perAddressPerSecond\":0,\"globalConnections\":16384,\"globalPerSecond\":0}", "\"limits\":null", "$.settings.limits")]
    [InlineData("\"name\":\"a\",\"maxConnectionsPerWorker\"", "\"name\":null,\"maxConnectionsPerWorker\"", "$.pools[0].name")]
    public void A_null_where_the_snapshot_type_forbids_one_is_refused(string find, string replace, string path) =>
        Refused(Edit(Snapshot, find, replace), SnapshotJson.ParseSnapshot, path);

    [Theory]
    [InlineData("\"root\":\"/srv/a\"", "\"root\":null", "$.vhosts[0].root")]
    [InlineData("\"index\":[\"index.html\"]", "\"index\":[\"index.html\",null]", "$.vhosts[0].index")]
    [InlineData("\"cgi\":[{", "\"cgi\":[null,{", "$.vhosts[0].cgi")]
    [InlineData("\"upstream\":\"http://127.0.0.1:8080\"", "\"upstream\":null", "$.vhosts[0].proxy[0].upstream")]
    [InlineData("\"headers\":[{\"name\":\"X-A\",\"value\":\"1\"}]", "\"headers\":[{\"name\":\"X-A\",\"value\":null}]", "$.vhosts[0].web.headers[0].value")]
    [InlineData("\"types\":[\"text/*\"]", "\"types\":null", "$.vhosts[0].web.compression.types")]
    [InlineData("\"program\":\"/usr/sbin/php-fpm8.2\"", "\"program\":null", "$.vhosts[0].fastCgi.spawn.program")]
    public void A_null_where_the_pool_type_forbids_one_is_refused(string find, string replace, string path) =>
        Refused(Edit(Pool, find, replace), SnapshotJson.ParsePool, path);

    /// <summary>A constructor parameter left out: it would be read as null (or 0) without a word.</summary>
    [Theory]
    [InlineData("\"pool\":\"a\",", "", "pool")]
    [InlineData("\"aliases\":[\"www.a.example\"],", "", "aliases")]
    [InlineData("\"idleTimeoutMs\":60000,", "", "idleTimeoutMs")]
    [InlineData("\"headerTimeoutMs\":10000,", "", "headerTimeoutMs")]
    public void A_missing_member_of_the_snapshot_is_refused(string find, string replace, string member) =>
        Refused(Edit(Snapshot, find, replace), SnapshotJson.ParseSnapshot, member);

    [Theory]
    [InlineData("\"root\":\"/srv/a\",", "", "root")]
    [InlineData("\"status\":404,", "", "status")]
    [InlineData("\"urlPrefix\":\"/app/\",", "", "urlPrefix")]
    public void A_missing_member_of_the_pool_is_refused(string find, string replace, string member) =>
        Refused(Edit(Pool, find, replace), SnapshotJson.ParsePool, member);

    /// <summary>A member twice, a map key twice, or a name that must be unique twice: which one holds would be a guess.</summary>
    [Theory]
    [InlineData("\"pool\":\"a\",", "\"pool\":\"a\",\"pool\":\"b\",", "$.vhosts[0].pool")]
    [InlineData("\"aliases\":[\"www.a.example\"]", "\"aliases\":[\"www.a.example\",\"A.Example.\"]", "$.vhosts[0].aliases[1]")]
    [InlineData("\"aliases\":[]", "\"aliases\":[\"www.a.example\"]", "$.vhosts[1].aliases[0]")]
    [InlineData("\"users\":[{\"login\":\"alice\",\"hash\":\"$2y$05$x\",\"pool\":\"alice\"}]", "\"users\":[{\"login\":\"alice\",\"hash\":\"$2y$05$x\",\"pool\":\"alice\"},{\"login\":\"alice\",\"hash\":\"$2y$05$y\",\"pool\":\"b\"}]", "$.vhosts[1].identity.users[1].login")]
    [InlineData("\"tlsHandOff\":false}]", "\"tlsHandOff\":false},{\"name\":\"a\",\"maxConnectionsPerWorker\":1,\"oneShot\":true,\"minSpare\":0,\"idleTimeoutMs\":1,\"tlsHandOff\":false}]", "$.pools[1].name")]
    public void A_repeated_member_or_name_in_the_snapshot_is_refused(string find, string replace, string path) =>
        Refused(Edit(Snapshot, find, replace), SnapshotJson.ParseSnapshot, path);

    [Theory]
    [InlineData("{\"memory_limit\":\"128M\"}", "{\"memory_limit\":\"128M\",\"memory_limit\":\"1G\"}", "$.vhosts[0].fastCgi.spawn.phpAdminValues")]
    [InlineData("\"root\":\"/srv/a\"", "\"root\":\"/srv/a\",\"root\":\"/\"", "$.vhosts[0].root")]
    [InlineData("\"errorPages\":[{\"status\":404,\"path\":\"/404.html\"}]", "\"errorPages\":[{\"status\":404,\"path\":\"/404.html\"},{\"status\":404,\"path\":\"/other.html\"}]", "$.vhosts[0].web.errorPages[1].status")]
    [InlineData("\"aliases\":[\"www.a.example\"]", "\"aliases\":[\"a.example\"]", "$.vhosts[0].aliases[0]")]
    public void A_repeated_member_or_name_in_the_pool_is_refused(string find, string replace, string path) =>
        Refused(Edit(Pool, find, replace), SnapshotJson.ParsePool, path);

    /// <summary>
    /// A vhost name or alias that is no host name (what the config loader refuses, <see cref="HostNames.IsValidPattern"/>):
    /// the routers would hold a key no request matches, or one that matches what it should not.
    /// </summary>
    [Theory]
    [InlineData("\"name\":\"a.example\"", "\"name\":\"a example\"", "$.vhosts[0].name: 'a example' is not a valid host name or '*.' wildcard (labels of letters")]
    [InlineData("\"name\":\"a.example\"", "\"name\":\"\"", "$.vhosts[0].name: '' is not a valid host name")]
    [InlineData("\"name\":\"a.example\"", "\"name\":\"a.example:443\"", "$.vhosts[0].name: 'a.example:443' is not a valid host name")]
    [InlineData("\"name\":\"a.example\"", "\"name\":\"[::1]\"", "$.vhosts[0].name: '[::1]' is not a valid host name")]
    [InlineData("\"name\":\"login.example\"", "\"name\":\"*\"", "$.vhosts[1].name: '*' is not a valid host name")]
    [InlineData("\"aliases\":[\"www.a.example\"]", "\"aliases\":[\"www.a.example\",\"-a.example\"]", "$.vhosts[0].aliases[1]: '-a.example' is not a valid host name")]
    [InlineData("\"aliases\":[\"www.a.example\"]", "\"aliases\":[\"*.*.a.example\"]", "$.vhosts[0].aliases[0]: '*.*.a.example' is not a valid host name")]
    [InlineData("\"aliases\":[]", "\"aliases\":[\"x..login.example\"]", "$.vhosts[1].aliases[0]: 'x..login.example' is not a valid host name")]
    [InlineData("\"aliases\":[]", "\"aliases\":[\"a/b\"]", "$.vhosts[1].aliases[0]: 'a/b' is not a valid host name")]
    public void A_host_name_that_is_none_in_the_snapshot_is_refused(string find, string replace, string says) =>
        Refused(Edit(Snapshot, find, replace), SnapshotJson.ParseSnapshot, says);

    [Theory]
    [InlineData("\"name\":\"a.example\"", "\"name\":\"a.exam\\u00E9ple\"", "$.vhosts[0].name: 'a.examéple' is not a valid host name")]
    [InlineData("\"name\":\"a.example\"", "\"name\":\"a.example/..\"", "$.vhosts[0].name: 'a.example/..' is not a valid host name")]
    [InlineData("\"aliases\":[\"www.a.example\"]", "\"aliases\":[\"www.a.example\",\"*.\"]", "$.vhosts[0].aliases[1]: '*.' is not a valid host name")]
    [InlineData("\"aliases\":[\"www.a.example\"]", "\"aliases\":[\"a\\nexample\"]", "$.vhosts[0].aliases[0]: 'a\nexample' is not a valid host name")]
    public void A_host_name_that_is_none_in_the_pool_is_refused(string find, string replace, string says) =>
        Refused(Edit(Pool, find, replace), SnapshotJson.ParsePool, says);

    [Fact]
    public void A_host_name_over_253_bytes_or_with_a_label_over_63_is_refused_and_quoted_short()
    {
        var label = new string('a', 63);
        var longest = $"{label}.{label}.{label}.{new string('b', 61)}";
        Assert.Equal(253, longest.Length);
        Assert.Equal(longest, SnapshotJson.ParsePool(Encoding.UTF8.GetBytes(Edit(Pool, "\"name\":\"a.example\"", $"\"name\":\"{longest}\""))).Vhosts[0].Name);
        Refused(Edit(Pool, "\"name\":\"a.example\"", $"\"name\":\"{longest}b\""), SnapshotJson.ParsePool, "$.vhosts[0].name: '" + longest + "b' is not a valid host name");
        Refused(Edit(Snapshot, "\"name\":\"a.example\"", $"\"name\":\"{label}a.example\""), SnapshotJson.ParseSnapshot, $"$.vhosts[0].name: '{label}a.example' is not a valid host name");
        var huge = new string('x', 100_000);
        var e = Assert.Throws<JsonException>(() => SnapshotJson.ParseSnapshot(Encoding.UTF8.GetBytes(Edit(Snapshot, "\"aliases\":[]", $"\"aliases\":[\"{huge}\"]"))));
        Assert.StartsWith("route snapshot: $.vhosts[1].aliases[0]: 'xxx", e.Message, StringComparison.Ordinal);
        Assert.Contains("… (100000 characters)' is not a valid host name", e.Message, StringComparison.Ordinal);
        Assert.True(e.Message.Length < 1000, e.Message);
    }

    /// <summary>What the loader accepts is accepted: wildcards, digits, '_', any case, one trailing dot.</summary>
    [Theory]
    [InlineData("*.a.example")]
    [InlineData("WWW.Other.Example.")]
    [InlineData("_acme.a.example")]
    [InlineData("127.0.0.1")]
    [InlineData("localhost")]
    public void A_host_name_the_loader_accepts_is_accepted(string alias)
    {
        Assert.True(HostNames.IsValidPattern(alias));
        Assert.Equal([alias], SnapshotJson.ParseSnapshot(Encoding.UTF8.GetBytes(Edit(Snapshot, "\"aliases\":[]", $"\"aliases\":[\"{alias}\"]"))).Vhosts[1].Aliases);
        Assert.Equal([alias], SnapshotJson.ParsePool(Encoding.UTF8.GetBytes(Edit(Pool, "\"aliases\":[\"www.a.example\"]", $"\"aliases\":[\"{alias}\"]"))).Vhosts[0].Aliases);
    }

    /// <summary>The default vhost is one of the snapshot's vhosts, spelt as its name is (the dispatcher compares them ordinally).</summary>
    [Theory]
    [InlineData("\"b.example\"", "$.defaultVhost: 'b.example' is not the name of a vhost of the snapshot")]
    [InlineData("\"A.example\"", "$.defaultVhost: 'A.example' is not the name of a vhost of the snapshot")]
    [InlineData("\"www.a.example\"", "$.defaultVhost: 'www.a.example' is not the name of a vhost of the snapshot")]
    [InlineData("\"\"", "$.defaultVhost: '' is not the name of a vhost of the snapshot")]
    public void A_default_vhost_that_is_none_of_the_snapshot_is_refused(string value, string says) =>
        Refused(Edit(Snapshot, "\"defaultVhost\":null", $"\"defaultVhost\":{value}"), SnapshotJson.ParseSnapshot, says);

    [Theory]
    [InlineData("a.example")]
    [InlineData("login.example")]
    public void A_default_vhost_of_the_snapshot_is_accepted(string name) =>
        Assert.Equal(name, SnapshotJson.ParseSnapshot(Encoding.UTF8.GetBytes(Edit(Snapshot, "\"defaultVhost\":null", $"\"defaultVhost\":\"{name}\""))).DefaultVhost);

    /// <summary>Numbers outside the range the type documents (negative timeouts and counts, ports, sizes).</summary>
    [Theory]
    [InlineData("\"headerTimeoutMs\":10000", "\"headerTimeoutMs\":-1", "$.settings.headerTimeoutMs")]
    [InlineData("\"maxRequestHead\":16384", "\"maxRequestHead\":60001", "$.settings.maxRequestHead")]
    [InlineData("\"maxRequestHead\":16384", "\"maxRequestHead\":0", "$.settings.maxRequestHead")]
    [InlineData("\"sendTimeoutMs\":60000", "\"sendTimeoutMs\":-60000", "$.settings.sendTimeoutMs")]
    [InlineData("\"perAddressConnections\":1024", "\"perAddressConnections\":-1", "$.settings.limits.perAddressConnections")]
    [InlineData("\"httpsPort\":443", "\"httpsPort\":65536", "$.httpsPort")]
    [InlineData("\"httpsPort\":443", "\"httpsPort\":0", "$.httpsPort")]
    [InlineData("\"failuresPerAddress\":10", "\"failuresPerAddress\":0", "$.vhosts[1].identity.failuresPerAddress")]
    [InlineData("\"failureWindowMs\":60000", "\"failureWindowMs\":-1", "$.vhosts[1].identity.failureWindowMs")]
    [InlineData("\"idleTimeoutMs\":60000", "\"idleTimeoutMs\":-5", "$.pools[0].idleTimeoutMs")]
    [InlineData("\"minSpare\":0", "\"minSpare\":-1", "$.pools[0].minSpare")]
    public void A_number_out_of_range_in_the_snapshot_is_refused(string find, string replace, string path) =>
        Refused(Edit(Snapshot, find, replace), SnapshotJson.ParseSnapshot, path);

    [Theory]
    [InlineData("\"maxChildren\":4", "\"maxChildren\":0", "$.vhosts[0].fastCgi.spawn.maxChildren")]
    [InlineData("\"maxBodySize\":1048576", "\"maxBodySize\":-1", "$.vhosts[0].web.maxBodySize")]
    [InlineData("\"minSize\":256", "\"minSize\":-256", "$.vhosts[0].web.compression.minSize")]
    [InlineData("\"minRequestBodyRate\":240", "\"minRequestBodyRate\":-240", "$.timeouts.minRequestBodyRate")]
    [InlineData("\"cgiTimeoutMs\":0", "\"cgiTimeoutMs\":-1", "$.vhosts[0].cgiTimeoutMs")]
    public void A_number_out_of_range_in_the_pool_is_refused(string find, string replace, string path) =>
        Refused(Edit(Pool, find, replace), SnapshotJson.ParsePool, path);

    /// <summary>
    /// An enumerated word that is none of its type's (exact spelling: the routers compare with ==): the dispatcher would
    /// treat an unknown TLS mode as none, an unknown plain-HTTP mode as serve, an unknown engine as BouncyCastle.
    /// </summary>
    [Theory]
    [InlineData("\"pool\":\"a\",\"tlsMode\":\"none\"", "\"pool\":\"a\",\"tlsMode\":\"Terminate\"", "$.vhosts[0].tlsMode: 'Terminate' is not a TLS mode (none, terminate or passthrough)")]
    [InlineData("\"pool\":\"a\",\"tlsMode\":\"none\"", "\"pool\":\"a\",\"tlsMode\":\"\"", "$.vhosts[0].tlsMode: '' is not a TLS mode")]
    [InlineData("\"pool\":\"\",\"tlsMode\":\"none\"", "\"pool\":\"\",\"tlsMode\":\"pass\"", "$.vhosts[1].tlsMode: 'pass' is not a TLS mode")]
    [InlineData("\"httpMode\":\"serve\",\"offerH2\":true", "\"httpMode\":\"redirects\",\"offerH2\":true", "$.vhosts[0].httpMode: 'redirects' is not a plain-HTTP mode (serve or redirect)")]
    [InlineData("\"offerH2\":true,\"engine\":\"bouncycastle\"", "\"offerH2\":true,\"engine\":\"boringssl\"", "$.vhosts[0].engine: 'boringssl' is not a TLS engine (bouncycastle or openssl)")]
    [InlineData("\"offerH2\":false,\"engine\":\"bouncycastle\"", "\"offerH2\":false,\"engine\":\"OpenSSL\"", "$.vhosts[1].engine: 'OpenSSL' is not a TLS engine")]
    public void An_unknown_word_in_the_snapshot_is_refused(string find, string replace, string says) =>
        Refused(Edit(Snapshot, find, replace), SnapshotJson.ParseSnapshot, says);

    /// <summary>An enumerated word, or an HTTP status outside what its place allows (the master's config loader refuses both).</summary>
    [Theory]
    [InlineData("\"level\":\"fastest\"", "\"level\":\"best\"", "$.vhosts[0].web.compression.level: 'best' is not a compression level (fastest, optimal or smallest)")]
    [InlineData("\"status\":404,", "\"status\":200,", "$.vhosts[0].web.errorPages[0].status: 200 is not an error status (400-599)")]
    [InlineData("\"status\":404,", "\"status\":399,", "$.vhosts[0].web.errorPages[0].status: 399 is not an error status (400-599)")]
    [InlineData("\"status\":404,", "\"status\":600,", "$.vhosts[0].web.errorPages[0].status: 600 is not an error status (400-599)")]
    [InlineData("\"status\":404,", "\"status\":-404,", "$.vhosts[0].web.errorPages[0].status: -404 is not an error status (400-599)")]
    [InlineData("\"errorPages\":[{\"status\":404,", "\"errorPages\":[{\"status\":599,\"path\":\"/x.html\"},{\"status\":0,", "$.vhosts[0].web.errorPages[1].status: 0 is not an error status (400-599)")]
    [InlineData("\"status\":301", "\"status\":200", "$.vhosts[0].web.redirects[0].status: 200 is not a redirect status (301, 302, 303, 307 or 308)")]
    [InlineData("\"status\":301", "\"status\":304", "$.vhosts[0].web.redirects[0].status: 304 is not a redirect status")]
    [InlineData("\"status\":301", "\"status\":0", "$.vhosts[0].web.redirects[0].status: 0 is not a redirect status")]
    public void An_unknown_word_or_a_status_out_of_range_in_the_pool_is_refused(string find, string replace, string says) =>
        Refused(Edit(Pool, find, replace), SnapshotJson.ParsePool, says);

    /// <summary>Every word and every status the master may send is accepted (the refusals above are not too wide).</summary>
    [Fact]
    public void Every_word_and_status_the_master_sends_is_accepted()
    {
        foreach (var mode in TlsModes.All)
            Assert.Equal(mode, SnapshotJson.ParseSnapshot(Encoding.UTF8.GetBytes(Edit(Snapshot, "\"pool\":\"a\",\"tlsMode\":\"none\"", $"\"pool\":\"a\",\"tlsMode\":\"{mode}\""))).Vhosts[0].TlsMode);
        foreach (var mode in HttpModes.All)
            Assert.Equal(mode, SnapshotJson.ParseSnapshot(Encoding.UTF8.GetBytes(Edit(Snapshot, "\"httpMode\":\"serve\",\"offerH2\":true", $"\"httpMode\":\"{mode}\",\"offerH2\":true"))).Vhosts[0].HttpMode);
        foreach (var engine in TlsEngines.All)
            Assert.Equal(engine, SnapshotJson.ParseSnapshot(Encoding.UTF8.GetBytes(Edit(Snapshot, "\"offerH2\":true,\"engine\":\"bouncycastle\"", $"\"offerH2\":true,\"engine\":\"{engine}\""))).Vhosts[0].Engine);
        foreach (var level in VhostWebRules.CompressionLevels)
            Assert.Equal(level, SnapshotJson.ParsePool(Encoding.UTF8.GetBytes(Edit(Pool, "\"level\":\"fastest\"", $"\"level\":\"{level}\""))).Vhosts[0].Web!.Compression!.Level);
        foreach (var status in new[] { 400, 404, 499, 500, 599 })
            Assert.Equal(status, SnapshotJson.ParsePool(Encoding.UTF8.GetBytes(Edit(Pool, "\"status\":404,", $"\"status\":{status},"))).Vhosts[0].Web!.ErrorPages[0].Status);
        foreach (var status in VhostWebRules.RedirectStatuses)
            Assert.Equal(status, SnapshotJson.ParsePool(Encoding.UTF8.GetBytes(Edit(Pool, "\"status\":301", $"\"status\":{status}"))).Vhosts[0].Web!.Redirects[0].Status);
    }

    /// <summary>
    /// Text that is not text: an escaped lone surrogate (valid JSON, no UTF-16 string) read by the serializer's own
    /// string reader and by each of our converters, and bytes that are not UTF-8. The reader throws an
    /// InvalidOperationException for them; the parse must still end in a JsonException naming the member.
    /// </summary>
    [Theory]
    [InlineData("\"root\":\"/srv/a\"", "\"root\":\"/srv/\\ud800\"", "$.vhosts[0].root")]
    [InlineData("\"index\":[\"index.html\"]", "\"index\":[\"index.html\",\"\\udc00x\"]", "$.vhosts[0].index[1]")]
    [InlineData("\"upstream\":\"http://127.0.0.1:8080\"", "\"upstream\":\"http://\\ud800:8080\"", "$.vhosts[0].proxy[0].upstream")]
    [InlineData("{\"memory_limit\":\"128M\"}", "{\"\\ud800\":\"128M\"}", "$.vhosts[0].fastCgi.spawn.phpAdminValues")]
    [InlineData("{\"memory_limit\":\"128M\"}", "{\"memory_limit\":\"\\udc00\"}", "$.vhosts[0].fastCgi.spawn.phpAdminValues")]
    [InlineData("\"level\":\"fastest\"", "\"level\":\"\\ud800\"", "$.vhosts[0].web.compression.level")]
    public void An_escaped_lone_surrogate_in_the_pool_is_refused(string find, string replace, string path) =>
        Refused(Edit(Pool, find, replace), SnapshotJson.ParsePool, path);

    [Theory]
    [InlineData("\"name\":\"a.example\"", "\"name\":\"a.\\ud800\"", "$.vhosts[0].name")]
    [InlineData("\"hash\":\"$2y$05$x\"", "\"hash\":\"\\udfff\"", "$.vhosts[1].identity.users[0].hash")]
    public void An_escaped_lone_surrogate_in_the_snapshot_is_refused(string find, string replace, string path) =>
        Refused(Edit(Snapshot, find, replace), SnapshotJson.ParseSnapshot, path);

    [Theory]
    [InlineData(new byte[] { 0xFF })]
    [InlineData(new byte[] { 0xC0, 0x80 })]
    [InlineData(new byte[] { 0xED, 0xA0, 0x80 })]
    [InlineData(new byte[] { 0xE2, 0x82 })]
    public void Bytes_that_are_not_UTF8_in_a_string_are_refused(byte[] invalid)
    {
        var json = Encoding.UTF8.GetBytes(Pool);
        var at = Encoding.UTF8.GetBytes(Pool[..Pool.IndexOf("/srv/a\"", StringComparison.Ordinal)]).Length + "/srv/".Length;
        byte[] edited = [.. json[..at], .. invalid, .. json[at..]];
        var e = Assert.Throws<JsonException>(() => SnapshotJson.ParsePool(edited));
        Assert.StartsWith("pool settings: $", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_refusal_says_which_payload_where_and_why()
    {
        var e = Assert.Throws<JsonException>(() => SnapshotJson.ParseSnapshot(Encoding.UTF8.GetBytes(Edit(Snapshot, "\"login\":\"alice\"", "\"login\":null"))));
        Assert.StartsWith("route snapshot: $.vhosts[1].identity.users[0].login: The constructor parameter 'Login' on type 'Dispatch.Wire.Payloads.IdentityUser' doesn't allow null values", e.Message, StringComparison.Ordinal);
        Assert.Equal("$.vhosts[1].identity.users[0].login", e.Path);
        e = Assert.Throws<JsonException>(() => SnapshotJson.ParsePool(Encoding.UTF8.GetBytes(Edit(Pool, "\"index\":[\"index.html\"]", "\"index\":[\"index.html\",null]"))));
        Assert.Equal("pool settings: $.vhosts[0].index[1]: null in an array of String", e.Message);
        e = Assert.Throws<JsonException>(() => SnapshotJson.ParseSnapshot(Encoding.UTF8.GetBytes(Edit(Snapshot, "\"aliases\":[]", "\"aliases\":[\"WWW.a.example.\"]"))));
        Assert.Equal("route snapshot: $.vhosts[1].aliases[0]: the host name 'www.a.example' is also $.vhosts[0].aliases[0]", e.Message);
        e = Assert.Throws<JsonException>(() => SnapshotJson.ParseSnapshot(Encoding.UTF8.GetBytes(Edit(Snapshot, "\"idleTimeoutMs\":60000", "\"idleTimeoutMs\":-5"))));
        Assert.Equal("route snapshot: $.pools[0].idleTimeoutMs: -5 is negative", e.Message);
        Assert.Equal("$.pools[0].idleTimeoutMs", e.Path);
        e = Assert.Throws<JsonException>(() => SnapshotJson.ParseSnapshot(Encoding.UTF8.GetBytes(Edit(Snapshot, "\"offerH2\":false,\"engine\":\"bouncycastle\"", "\"offerH2\":false,\"engine\":\"gnutls\""))));
        Assert.Equal("route snapshot: $.vhosts[1].engine: 'gnutls' is not a TLS engine (bouncycastle or openssl)", e.Message);
        Assert.Equal("$.vhosts[1].engine", e.Path);
        e = Assert.Throws<JsonException>(() => SnapshotJson.ParsePool(Encoding.UTF8.GetBytes(Edit(Pool, "\"status\":301", "\"status\":200"))));
        Assert.Equal("pool settings: $.vhosts[0].web.redirects[0].status: 200 is not a redirect status (301, 302, 303, 307 or 308)", e.Message);
        Assert.Equal("$.vhosts[0].web.redirects[0].status", e.Path);
    }

    [Fact]
    public void A_json_null_instead_of_the_whole_payload_is_refused()
    {
        Refused("null", SnapshotJson.ParseSnapshot, "route snapshot");
        Refused("null", SnapshotJson.ParsePool, "pool settings");
    }

    private static string Edit(string json, string find, string replace)
    {
        var at = json.IndexOf(find, StringComparison.Ordinal);
        Assert.True(at >= 0, $"the case edits '{find}', which the payload does not hold");
        Assert.Equal(at, json.LastIndexOf(find, StringComparison.Ordinal));
        return string.Concat(json.AsSpan(0, at), replace, json.AsSpan(at + find.Length));
    }

    private delegate T Parser<T>(ReadOnlySpan<byte> json);

    private static void Refused<T>(string json, Parser<T> parse, string named)
    {
        var e = Assert.Throws<JsonException>(() => parse(Encoding.UTF8.GetBytes(json)));
        Assert.Contains(named, e.Message, StringComparison.Ordinal);
    }
}
