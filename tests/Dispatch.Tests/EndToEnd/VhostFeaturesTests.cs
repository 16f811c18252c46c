using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// Per-vhost HTTP features (docs/vhost-features.md) through the whole of Dispatch — master, dispatcher, the tenant's
/// jailed worker — with curl: compression (gzip, brotli, precompressed siblings), maxBodySize, headers, error pages,
/// redirects, over plain HTTP/1.1 and over TLS with HTTP/1.1 and h2.
/// </summary>
public sealed class VhostFeaturesTests : IDisposable
{
    private const string Hsts = "max-age=63072000; includeSubDomains";
    private readonly ITestOutputHelper _output;
    private readonly List<string> _temp = [];
    private DispatchInstance? _dispatch;

    public VhostFeaturesTests(ITestOutputHelper output) => _output = output;

    private sealed record Setup(DispatchInstance D, int TlsPort, string RootA, string Html, string Script)
    {
        public string Http => $"http://127.0.0.1:{D.HttpPort}";

        public string[] Tls(params string[] more) => ["--cacert", TestWorld.CaPath, "--resolve", $"a.localhost:{TlsPort}:127.0.0.1", "--resolve", $"www.a.localhost:{TlsPort}:127.0.0.1", .. more];

        public string Https => $"https://a.localhost:{TlsPort}";
    }

    private Setup Start(Action<JsonObject>? adjust = null)
    {
        var html = "<!doctype html><title>A</title>" + string.Concat(Enumerable.Range(0, 400).Select(i => $"<p>line {i} of a compressible page</p>\n"));
        var script = "// app\n" + string.Concat(Enumerable.Range(0, 300).Select(i => $"function f{i}() {{ return {i} * 2; }}\n"));
        var site = TwoTenantSite.Create("features", html, moreA: new Dictionary<string, string>
        {
            ["app.js"] = script,
            ["tiny.txt"] = "tiny body",
            ["errors/404.html"] = "<h1>custom 404 of a</h1>",
            ["new.html"] = "new page",
        });
        var rootA = site.RootA;
        var png = new byte[8192];
        new Random(5).NextBytes(png);
        File.WriteAllBytes(Path.Combine(rootA, "photo.png"), png);
        File.WriteAllBytes(Path.Combine(rootA, "app.js.gz"), Gzip(Encoding.UTF8.GetBytes(script)));
        File.WriteAllBytes(Path.Combine(rootA, "app.js.br"), Brotli(Encoding.UTF8.GetBytes(script)));
        TestWorld.Chown(rootA, TestWorld.TenantA, recursive: true);
        var cgi = site.CgiTree(new Dictionary<string, string>
        {
            // Reads the whole body before its header: a body refused mid-way is answered 413, not a cut 200.
            ["sha-first.sh"] = "#!/bin/sh\nsum=$(sha256sum | cut -d' ' -f1)\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' \"$sum\"\n",
        });
        var a = site.Terminate("a");
        a["cgi"] = new JsonObject { ["/cgi-bin/"] = cgi };
        a["headers"] = new JsonObject { ["Strict-Transport-Security"] = Hsts, ["X-Frame-Options"] = "DENY" };
        a["errorPages"] = new JsonObject { ["404"] = "/errors/404.html", ["405"] = "/errors/missing.html" };
        a["canonicalHost"] = "a.localhost";
        a["redirects"] = new JsonArray(
            new JsonObject { ["from"] = "/old.html", ["to"] = "/new.html" },
            new JsonObject { ["from"] = "/docs", ["to"] = "/manual/", ["match"] = "prefix", ["status"] = 308 });
        a["maxBodySize"] = "1m";
        adjust?.Invoke(site.Config);
        _dispatch = site.StartReady(_output);
        return new Setup(_dispatch, site.TlsPort, rootA, html, script);
    }

    [SkippableFact]
    public void Curl_compressed_negotiates_gzip_and_brotli_and_images_tiny_bodies_stay_plain()
    {
        var s = Start();
        foreach (var (label, args) in new[] { ("http/1.1", new[] { "-H", "Host: a.localhost", $"{s.Http}/" }), ("h2", s.Tls("--http2", $"{s.Https}/")) })
        {
            foreach (var encoding in new[] { "gzip", "br" })
            {
                // curl --compressed decodes what it gets; the head says what was sent.
                var r = CurlBytes(["--compressed", "-H", $"Accept-Encoding: {encoding}", .. args]);
                Assert.True(r.Status == 200, $"{label} {encoding}: {r.Head}");
                Assert.Equal(encoding, Header(r.Head, "content-encoding"));
                Assert.Contains("accept-encoding", Header(r.Head, "vary") ?? string.Empty, StringComparison.OrdinalIgnoreCase);
                Assert.Equal(s.Html, Encoding.UTF8.GetString(r.Body));
                Assert.Equal(Hsts, Header(r.Head, "strict-transport-security"));
            }

            // curl's own Accept-Encoding ("deflate, gzip, br, zstd") gets one of ours.
            var auto = CurlBytes(["--compressed", .. args]);
            Assert.True(Header(auto.Head, "content-encoding") is "br" or "gzip", auto.Head);
            Assert.Equal(s.Html, Encoding.UTF8.GetString(auto.Body));
        }

        var photo = CurlBytes("--compressed", "-H", "Host: a.localhost", $"{s.Http}/photo.png");
        Assert.Equal(200, photo.Status);
        Assert.Null(Header(photo.Head, "content-encoding"));
        Assert.Equal(File.ReadAllBytes(Path.Combine(s.RootA, "photo.png")), photo.Body);
        var tiny = CurlBytes("--compressed", "-H", "Host: a.localhost", $"{s.Http}/tiny.txt");
        Assert.Null(Header(tiny.Head, "content-encoding"));
        Assert.Equal("tiny body", Encoding.UTF8.GetString(tiny.Body));
        var plain = CurlBytes("-H", "Host: a.localhost", $"{s.Http}/");
        Assert.Null(Header(plain.Head, "content-encoding"));
        Assert.Equal(s.Html, Encoding.UTF8.GetString(plain.Body));
    }

    [SkippableFact]
    public void Precompressed_siblings_are_served_with_the_originals_type_their_own_etag_and_a_sane_range()
    {
        var s = Start();
        var gz = File.ReadAllBytes(Path.Combine(s.RootA, "app.js.gz"));
        var br = File.ReadAllBytes(Path.Combine(s.RootA, "app.js.br"));
        foreach (var (encoding, file) in new[] { ("gzip", gz), ("br", br) })
        {
            // Without --compressed curl leaves the body as sent: exactly the sibling's bytes.
            var raw = CurlBytes([.. s.Tls("--http2", "-H", $"Accept-Encoding: {encoding}", $"{s.Https}/app.js")]);
            Assert.True(raw.Status == 200, raw.Head);
            Assert.Equal(encoding, Header(raw.Head, "content-encoding"));
            Assert.StartsWith("text/javascript", Header(raw.Head, "content-type"), StringComparison.Ordinal);
            Assert.Contains("accept-encoding", Header(raw.Head, "vary") ?? string.Empty, StringComparison.OrdinalIgnoreCase);
            Assert.Equal(file, raw.Body);
            var decoded = CurlBytes([.. s.Tls("--compressed", "-H", $"Accept-Encoding: {encoding}", $"{s.Https}/app.js")]);
            Assert.Equal(s.Script, Encoding.UTF8.GetString(decoded.Body));
        }

        var plain = CurlBytes([.. s.Tls($"{s.Https}/app.js")]);
        var gzip = CurlBytes([.. s.Tls("-H", "Accept-Encoding: gzip", $"{s.Https}/app.js")]);
        var brotli = CurlBytes([.. s.Tls("-H", "Accept-Encoding: br", $"{s.Https}/app.js")]);
        var tags = new[] { Header(plain.Head, "etag"), Header(gzip.Head, "etag"), Header(brotli.Head, "etag") };
        Assert.All(tags, Assert.NotNull);
        Assert.Equal(3, tags.Distinct().Count());

        // A validator is good for its own representation only.
        Assert.Equal(304, CurlBytes([.. s.Tls("-H", "Accept-Encoding: gzip", "-H", $"If-None-Match: {tags[1]}", $"{s.Https}/app.js")]).Status);
        Assert.Equal(200, CurlBytes([.. s.Tls("-H", "Accept-Encoding: gzip", "-H", $"If-None-Match: {tags[0]}", $"{s.Https}/app.js")]).Status);
        Assert.Equal(200, CurlBytes([.. s.Tls("-H", "Accept-Encoding: gzip", "-H", $"If-None-Match: {tags[2]}", $"{s.Https}/app.js")]).Status);

        // A range is a range of the encoded bytes (as nginx's gzip_static), never re-compressed.
        var range = CurlBytes([.. s.Tls("-H", "Accept-Encoding: gzip", "-r", "0-9", $"{s.Https}/app.js")]);
        Assert.Equal(206, range.Status);
        Assert.Equal($"bytes 0-9/{gz.Length}", Header(range.Head, "content-range"));
        Assert.Equal(gz[..10], range.Body);
        var stale = CurlBytes([.. s.Tls("-H", "Accept-Encoding: gzip", "-H", $"If-Range: {tags[0]}", "-r", "0-9", $"{s.Https}/app.js")]);
        Assert.Equal(200, stale.Status);
        Assert.Equal(gz, stale.Body);
    }

    [SkippableFact]
    public void MaxBodySize_is_413_beyond_it_with_content_length_and_chunked_over_http1_and_h2_and_just_under_it_succeeds()
    {
        var s = Start(config => config["defaultVhost"] = "a.localhost");
        var exact = TempFile(1 << 20, 7);
        var over = TempFile((1 << 20) + 1, 8);

        // Kestrel counts a chunked body's framing (chunk-size lines, CRLFs) against the limit too: a few bytes per
        // chunk, so a chunked body just under the limit is tested 4 KiB under it.
        var nearly = TempFile((1 << 20) - 4096, 6);
        foreach (var (label, protocol) in new[] { ("http/1.1", "--http1.1"), ("h2", "--http2") })
        {
            foreach (var (framing, extra) in new[] { ("content-length", Array.Empty<string>()), ("chunked", new[] { "-H", "Transfer-Encoding: chunked" }) })
            {
                var under = framing == "chunked" && protocol == "--http1.1" ? nearly : exact;
                var underSha = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(under)));
                var ok = CurlBytes([.. s.Tls([protocol, "-H", "Content-Type: application/octet-stream", "--data-binary", "@" + under, .. extra, $"{s.Https}/cgi-bin/sha-first.sh"])]);
                Assert.True(ok.Status == 200, $"{label} {framing} at the limit: {ok.Head}");
                Assert.Equal(underSha, Encoding.ASCII.GetString(ok.Body).Trim());

                if (protocol == "--http2" && framing == "content-length")
                {
                    // curl 7.88 may report the RST_STREAM NO_ERROR that follows a complete 413 (the server asks it to
                    // stop sending) as an error, depending on timing: nghttp shows the frames. No name in a URL to an
                    // address gives no SNI: the config's defaultVhost takes it.
                    var frames = Tools.Run("nghttp", "-v", "--no-dep", "-d", over, "-H", $":authority: a.localhost:{s.TlsPort}", $"https://127.0.0.1:{s.TlsPort}/cgi-bin/sha-first.sh");
                    Assert.Matches(@"recv \(stream_id=\d+\) :status: 413\n", frames.Stdout);
                    Assert.Matches(@"recv \(stream_id=\d+\) strict-transport-security: max-age=63072000; includeSubDomains\n", frames.Stdout);
                    Assert.DoesNotContain("PROTOCOL_ERROR", frames.Stdout, StringComparison.Ordinal);
                    Assert.True(!frames.Stdout.Contains("recv RST_STREAM", StringComparison.Ordinal) || frames.Stdout.Contains("error_code=NO_ERROR", StringComparison.Ordinal), frames.Stdout);
                    continue;
                }

                var refused = CurlBytes([.. s.Tls([protocol, "-H", "Content-Type: application/octet-stream", "--data-binary", "@" + over, .. extra, $"{s.Https}/cgi-bin/sha-first.sh"])]);
                Assert.True(refused.Status == 413, $"{label} {framing} one byte over: {refused.Head}");
                Assert.Equal(Hsts, Header(refused.Head, "strict-transport-security"));
            }
        }

        // Plain HTTP, and a vhost left at the default (32m): a 2 MiB body passes there.
        var big = TempFile(2 << 20, 9);
        Assert.Equal(413, CurlBytes("-H", "Host: a.localhost", "--data-binary", "@" + big, $"{s.Http}/cgi-bin/sha-first.sh").Status);
        var b = CurlBytes("-H", "Host: b.localhost", "--data-binary", "@" + big, $"{s.Http}/");
        Assert.Equal(405, b.Status); // static files take no body, but it was not refused for its size
    }

    [SkippableFact]
    public void Headers_error_pages_and_redirects()
    {
        var s = Start();
        var missing = CurlBytes("-H", "Host: a.localhost", $"{s.Http}/nope.html");
        Assert.Equal(404, missing.Status);
        Assert.Equal("<h1>custom 404 of a</h1>", Encoding.UTF8.GetString(missing.Body));
        Assert.StartsWith("text/html", Header(missing.Head, "content-type"), StringComparison.Ordinal);
        Assert.Equal(Hsts, Header(missing.Head, "strict-transport-security"));
        Assert.Equal("DENY", Header(missing.Head, "x-frame-options"));

        // A page that is not there: the built-in text, and the reason in the log.
        var post = CurlBytes("-H", "Host: a.localhost", "-X", "DELETE", $"{s.Http}/index.html");
        Assert.Equal(405, post.Status);
        Assert.Equal("Method Not Allowed\n", Encoding.UTF8.GetString(post.Body));
        s.D.WaitForLine(new System.Text.RegularExpressions.Regex("Error page /errors/missing.html of a.localhost for status 405 could not be served"));

        var www = CurlBytes("-H", $"Host: www.a.localhost:{s.D.HttpPort}", $"{s.Http}/x/y.html?q=1&r=2");
        Assert.Equal(301, www.Status);
        Assert.Equal($"http://a.localhost:{s.D.HttpPort}/x/y.html?q=1&r=2", Header(www.Head, "location"));
        Assert.Equal(Hsts, Header(www.Head, "strict-transport-security"));
        var wwwTls = CurlBytes([.. s.Tls("--http2", "-X", "POST", $"https://www.a.localhost:{s.TlsPort}/form")]);
        Assert.Equal(308, wwwTls.Status);
        Assert.Equal($"https://a.localhost:{s.TlsPort}/form", Header(wwwTls.Head, "location"));

        var old = CurlBytes("-H", "Host: a.localhost", $"{s.Http}/old.html?utm=1");
        Assert.Equal(301, old.Status);
        Assert.Equal("/new.html?utm=1", Header(old.Head, "location"));
        Assert.Equal(404, CurlBytes("-H", "Host: a.localhost", $"{s.Http}/old.html/more").Status); // exact only
        var docs = CurlBytes("-H", "Host: a.localhost", $"{s.Http}/docs/guide/a%20b.html?v=2");
        Assert.Equal(308, docs.Status);
        Assert.Equal("/manual/guide/a%20b.html?v=2", Header(docs.Head, "location"));
        Assert.Equal("/manual/", Header(CurlBytes("-H", "Host: a.localhost", $"{s.Http}/docs").Head, "location"));
        Assert.Equal(404, CurlBytes("-H", "Host: a.localhost", $"{s.Http}/docsearch").Status); // whole segments

        var followed = CurlBytes("-L", "-H", "Host: a.localhost", $"{s.Http}/old.html");
        Assert.Equal("new page", Encoding.UTF8.GetString(followed.Body));

        // Vhost b has none of it.
        var b = CurlBytes("-H", "Host: b.localhost", $"{s.Http}/nope");
        Assert.Equal(404, b.Status);
        Assert.Null(Header(b.Head, "strict-transport-security"));
        Assert.Equal("Not Found\n", Encoding.UTF8.GetString(b.Body));
    }

    [SkippableFact]
    public void Compression_false_turns_it_off()
    {
        var s = Start(config => config["vhosts"]!["a.localhost"]!["compression"] = false);
        var r = CurlBytes("--compressed", "-H", "Host: a.localhost", $"{s.Http}/app.js");
        Assert.Equal(200, r.Status);
        Assert.Null(Header(r.Head, "content-encoding"));
        Assert.Equal(s.Script, Encoding.UTF8.GetString(r.Body));
    }

    private sealed record Response(int Status, string Head, byte[] Body);

    /// <summary>curl writing the body to a file (bytes as sent, or as decoded with --compressed) and the last head.</summary>
    private static Response CurlBytes(params string[] args)
    {
        var body = Path.GetTempFileName();
        var head = Path.GetTempFileName();
        try
        {
            var r = Tools.Run("curl", ["-sS", "--max-time", "30", "-D", head, "-o", body, "-w", "%{http_code}", .. args]);
            Assert.True(r.ExitCode == 0, $"curl {string.Join(' ', args)} failed ({r.ExitCode}): {r.Stderr}");
            var heads = File.ReadAllText(head).Split("\r\n\r\n", StringSplitOptions.RemoveEmptyEntries);
            return new Response(int.Parse(r.Stdout, System.Globalization.CultureInfo.InvariantCulture), heads.Length == 0 ? string.Empty : heads[^1], File.ReadAllBytes(body));
        }
        finally
        {
            File.Delete(body);
            File.Delete(head);
        }
    }

    private static string? Header(string head, string name) => head.Split("\r\n")
        .Select(l => l.Split(':', 2))
        .Where(p => p.Length == 2 && p[0].Trim().Equals(name, StringComparison.OrdinalIgnoreCase))
        .Select(p => p[1].Trim())
        .FirstOrDefault();

    private string TempFile(int length, int seed)
    {
        var path = Path.Combine(Path.GetTempPath(), $"dispatch-body-{Guid.NewGuid():N}");
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        File.WriteAllBytes(path, data);
        _temp.Add(path);
        return path;
    }

    private static byte[] Gzip(byte[] data)
    {
        using var output = new MemoryStream();
        using (var gzip = new GZipStream(output, CompressionLevel.SmallestSize))
            gzip.Write(data);
        return output.ToArray();
    }

    private static byte[] Brotli(byte[] data)
    {
        using var output = new MemoryStream();
        using (var brotli = new BrotliStream(output, CompressionLevel.SmallestSize))
            brotli.Write(data);
        return output.ToArray();
    }

    public void Dispose()
    {
        _dispatch?.Dispose();
        foreach (var f in _temp)
            File.Delete(f);
    }
}
