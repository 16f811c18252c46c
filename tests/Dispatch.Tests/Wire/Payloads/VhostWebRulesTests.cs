using Dispatch.Wire.Payloads;

namespace Dispatch.Tests.Wire.Payloads;

/// <summary>The value checks shared by the master's config loader and the worker (docs/vhost-features.md).</summary>
public sealed class VhostWebRulesTests
{
    [Theory]
    [InlineData("1", 1L)]
    [InlineData("1048576", 1048576L)]
    [InlineData("512k", 512L << 10)]
    [InlineData("50m", 50L << 20)]
    [InlineData("50M", 50L << 20)]
    [InlineData(" 2g ", 2L << 30)]
    [InlineData("64g", 64L << 30)]
    public void Sizes_are_bytes_or_binary_k_m_g(string text, long bytes)
    {
        Assert.Null(VhostWebRules.ParseSize(text, out var parsed));
        Assert.Equal(bytes, parsed);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("0m")]
    [InlineData("65g")]
    [InlineData("1t")]
    [InlineData("-1")]
    [InlineData("1.5m")]
    [InlineData("50 MB")]
    [InlineData("m")]
    [InlineData("")]
    [InlineData("99999999999999999999")]
    public void Other_sizes_are_refused(string text)
    {
        Assert.Equal($"'{text}' is not a size from 1 byte to 64g such as 1048576, 512k, 50m or 1g", VhostWebRules.ParseSize(text, out _));
    }

    [Theory]
    [InlineData("Strict-Transport-Security", "max-age=63072000; includeSubDomains; preload")]
    [InlineData("Content-Security-Policy", "default-src 'self'")]
    [InlineData("X-Frame-Options", "DENY")]
    [InlineData("Cache-Control", "public, max-age=600")]
    [InlineData("Set-Cookie", "a=b; Secure")]
    public void Ordinary_headers_are_accepted(string name, string value) => Assert.Null(VhostWebRules.CheckHeader(name, value));

    [Theory]
    [InlineData("connection")]
    [InlineData("Keep-Alive")]
    [InlineData("Proxy-Connection")]
    [InlineData("TE")]
    [InlineData("Trailer")]
    [InlineData("Upgrade")]
    public void Hop_by_hop_headers_are_refused_in_any_case(string name) =>
        Assert.Equal($"{name} is a hop-by-hop header: it belongs to one connection, not to the vhost's responses", VhostWebRules.CheckHeader(name, "x"));

    [Theory]
    [InlineData("Content-Type")]
    [InlineData("content-encoding")]
    [InlineData("Content-Range")]
    [InlineData("ETag")]
    [InlineData("Last-Modified")]
    [InlineData("Location")]
    [InlineData("Date")]
    [InlineData("Host")]
    [InlineData("Status")]
    [InlineData("Accept-Ranges")]
    public void Per_response_headers_are_refused(string name) =>
        Assert.Equal($"{name} is set for each response by the server or the handler and cannot be fixed per vhost", VhostWebRules.CheckHeader(name, "x"));

    [Theory]
    [InlineData(":authority")]
    [InlineData("X-A:b")]
    [InlineData("X(A)")]
    [InlineData("")]
    public void Header_names_are_tokens(string name) =>
        Assert.Equal($"'{name}' is not a header name (letters, digits and !#$%&'*+-.^_`|~)", VhostWebRules.CheckHeader(name, "x"));

    [Theory]
    [InlineData("a\nb", "contains CR or LF (header injection)")]
    [InlineData("a\rb", "contains CR or LF (header injection)")]
    [InlineData("a\0b", "contains a control character or a character outside ISO-8859-1")]
    [InlineData("a\u2028b", "contains a control character or a character outside ISO-8859-1")]
    [InlineData("a ", "starts or ends with white space")]
    [InlineData("\ta", "starts or ends with white space")]
    public void Header_values_are_single_clean_lines(string value, string reason) =>
        Assert.Equal($"the value of X-A {reason}", VhostWebRules.CheckHeader("X-A", value));

    [Fact]
    public void A_tab_inside_a_value_is_fine() => Assert.Null(VhostWebRules.CheckHeader("X-A", "a\tb"));

    [Theory]
    [InlineData("/old", "/old", true, "")]
    [InlineData("/old", "/old/", true, "/")]
    [InlineData("/old", "/old/x/y", true, "/x/y")]
    [InlineData("/old/", "/old/x", true, "/x")]
    [InlineData("/old/", "/old", true, "")]
    [InlineData("/old", "/older", false, "")]
    [InlineData("/old", "/ol", false, "")]
    [InlineData("/", "/anything", true, "/anything")]
    public void Prefixes_match_whole_segments(string from, string path, bool matches, string rest)
    {
        Assert.Equal(matches, VhostWebRules.Matches(from, path, out var actual));
        Assert.Equal(rest, actual);
    }

    [Theory]
    [InlineData("/new", null)]
    [InlineData("/new?a=1", null)]
    [InlineData("https://example.com/x", null)]
    [InlineData("http://example.com", null)]
    [InlineData("//example.com/x", "bad")]
    [InlineData("ftp://example.com/x", "bad")]
    [InlineData("https://user@example.com/", "bad")]
    [InlineData("/a b", "bad")]
    [InlineData("/a#frag", "bad")]
    [InlineData("/caf\u00e9", "bad")]
    [InlineData("new", "bad")]
    public void Redirect_targets_are_paths_or_http_urls(string to, string? problem) =>
        Assert.Equal(problem is null, VhostWebRules.CheckRedirectTo(to) is null);

    [Theory]
    [InlineData("/a", "/a", false, true)]
    [InlineData("/a", "/a?x=1", false, true)]
    [InlineData("/a", "/b", false, false)]
    [InlineData("/a", "/a/b", true, true)]
    [InlineData("/a", "/ab", true, false)]
    [InlineData("/", "/x", true, true)]
    [InlineData("/", "https://other.example/", true, false)]
    public void Redirect_loops_are_found(string from, string to, bool prefix, bool loops) =>
        Assert.Equal(loops, VhostWebRules.CheckRedirectLoop(from, to, prefix) is not null);

    [Theory]
    [InlineData("image/png", true)]
    [InlineData("image/webp", true)]
    [InlineData("video/mp4", true)]
    [InlineData("audio/ogg", true)]
    [InlineData("font/woff2", true)]
    [InlineData("application/zip", true)]
    [InlineData("text/event-stream", true)]
    [InlineData("image/svg+xml", false)]
    [InlineData("image/x-icon", false)]
    [InlineData("text/html", false)]
    [InlineData("application/wasm", false)]
    public void Already_compressed_types_are_known(string type, bool never) => Assert.Equal(never, VhostWebRules.IsNeverCompressed(type));

    [Fact]
    public void The_default_types_are_all_acceptable_and_the_defaults_validate()
    {
        Assert.All(VhostWebRules.DefaultCompressTypes, t => Assert.Null(VhostWebRules.CheckCompressType(t)));
        Assert.Null(VhostWebRules.Validate(VhostWeb.Default, ["a.example"]));
        Assert.Equal(32L << 20, VhostWeb.Default.MaxBodySize);
    }

    [Theory]
    [InlineData("www.a.example", null)]
    [InlineData("A.Example.", null)]
    [InlineData("b.example", "bad")]
    [InlineData("*.a.example", "bad")]
    [InlineData("", "bad")]
    public void The_canonical_host_is_one_of_the_vhosts_names(string host, string? problem) =>
        Assert.Equal(problem is null, VhostWebRules.CheckCanonicalHost(host, ["a.example", "www.a.example", "*.a.example"]) is null);

    [Theory]
    [InlineData("400", 400)]
    [InlineData("404", 404)]
    [InlineData("599", 599)]
    public void Error_page_keys_are_statuses_written_as_themselves(string key, int status)
    {
        Assert.Null(VhostWebRules.ParseErrorStatus(key, out var parsed));
        Assert.Equal(status, parsed);
    }

    /// <summary>
    /// Keys that read as a status but are not written as it: they passed (0404 as 404) and two keys of one vhost could
    /// name one status, which the worker then refused the whole pool for (issue 13).
    /// </summary>
    [Theory]
    [InlineData("0404", "'0404' is not written as a status: write 404 (three digits: no sign, leading zero or space)")]
    [InlineData("00404", "'00404' is not written as a status: write 404 (three digits: no sign, leading zero or space)")]
    [InlineData("+404", "'+404' is not written as a status: write 404 (three digits: no sign, leading zero or space)")]
    [InlineData(" 404", "' 404' is not written as a status: write 404 (three digits: no sign, leading zero or space)")]
    [InlineData("404 ", "'404 ' is not written as a status: write 404 (three digits: no sign, leading zero or space)")]
    [InlineData("\t500\n", "'\t500\n' is not written as a status: write 500 (three digits: no sign, leading zero or space)")]
    [InlineData("200", "'200' is not an error status (400-599)")]
    [InlineData("600", "'600' is not an error status (400-599)")]
    [InlineData("-404", "'-404' is not an error status (400-599)")]
    [InlineData("404.0", "'404.0' is not an error status (400-599)")]
    [InlineData("4O4", "'4O4' is not an error status (400-599)")]
    [InlineData("\u0664\u0660\u0664", "'\u0664\u0660\u0664' is not an error status (400-599)")] // Arabic-Indic digits
    [InlineData("", "'' is not an error status (400-599)")]
    public void Other_error_page_keys_are_refused(string key, string problem)
    {
        Assert.Equal(problem, VhostWebRules.ParseErrorStatus(key, out var status));
        Assert.Equal(0, status);
    }

    [Fact]
    public void The_worker_refuses_what_the_master_would()
    {
        var web = VhostWeb.Default with { Headers = [new HeaderRoute("Connection", "close")] };
        Assert.StartsWith("headers:Connection: ", VhostWebRules.Validate(web, ["a.example"]), StringComparison.Ordinal);
        Assert.NotNull(VhostWebRules.Validate(VhostWeb.Default with { MaxBodySize = 0 }, ["a.example"]));
        Assert.NotNull(VhostWebRules.Validate(VhostWeb.Default with { Redirects = [new RedirectRoute("/a", "/a", 301, false)] }, ["a.example"]));
        Assert.NotNull(VhostWebRules.Validate(VhostWeb.Default with { CanonicalHost = "b.example" }, ["a.example"]));
        Assert.NotNull(VhostWebRules.Validate(VhostWeb.Default with { ErrorPages = [new ErrorPageRoute(200, "/x.html")] }, ["a.example"]));
    }
}
