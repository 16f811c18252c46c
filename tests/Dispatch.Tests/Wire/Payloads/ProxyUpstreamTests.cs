using System.Net;
using System.Net.Sockets;
using Dispatch.Wire.Payloads;

namespace Dispatch.Tests.Wire.Payloads;

/// <summary>The one parser of proxy upstreams (config loader, Landlock ports, chroot binds, worker) and of proxy prefixes.</summary>
public class ProxyUpstreamTests
{
    [Theory]
    [InlineData("unix:/srv/a/run/app.sock", "/srv/a/run/app.sock", null, 0, "unix:/srv/a/run/app.sock")]
    [InlineData("UNIX:/srv/a/run/app.sock", "/srv/a/run/app.sock", null, 0, "unix:/srv/a/run/app.sock")]
    [InlineData("http://127.0.0.1:8081", null, "127.0.0.1", 8081, "http://127.0.0.1:8081")]
    [InlineData("HTTP://127.0.0.1:8081/", null, "127.0.0.1", 8081, "http://127.0.0.1:8081")]
    [InlineData("Http://127.0.0.2:1", null, "127.0.0.2", 1, "http://127.0.0.2:1")]
    [InlineData("http://127.255.255.255:65535", null, "127.255.255.255", 65535, "http://127.255.255.255:65535")]
    [InlineData("http://127.0.0.0:80", null, "127.0.0.0", 80, "http://127.0.0.0:80")]
    [InlineData("http://[::1]:8081", null, "::1", 8081, "http://[::1]:8081")]
    public void Unix_sockets_and_loopback_ports_are_parsed(string text, string? path, string? address, int port, string canonical)
    {
        Assert.True(ProxyUpstream.TryParse(text, out var upstream, out var error), error);
        Assert.Equal(string.Empty, error);
        Assert.Equal(path, upstream.SocketPath);
        Assert.Equal(path is not null, upstream.IsUnixSocket);
        Assert.Equal(address is null ? null : IPAddress.Parse(address), upstream.Address);
        Assert.Equal(port, upstream.Port);
        Assert.Equal(canonical, upstream.ToString());
        var endPoint = upstream.CreateEndPoint();
        if (path is not null)
            Assert.Equal(path, Assert.IsType<UnixDomainSocketEndPoint>(endPoint).ToString());
        else
            Assert.True(IPAddress.IsLoopback(Assert.IsType<IPEndPoint>(endPoint).Address));

        // The canonical spelling parses back to an equal value.
        Assert.True(ProxyUpstream.TryParse(canonical, out var again, out _));
        Assert.Equal(upstream, again);
    }

    [Theory]
    [InlineData("", "empty")]
    [InlineData(null, "empty")]
    [InlineData("http://10.0.0.1:8080", "'10.0.0.1' is not a loopback address")]
    [InlineData("http://192.168.1.1:80", "not a loopback address")]
    [InlineData("http://128.0.0.1:80", "not a loopback address")]
    [InlineData("http://localhost:8080", "'localhost' is not a loopback address")]
    [InlineData("http://example.com:8080", "not a loopback address")]
    [InlineData("http://[::2]:8080", "not a loopback address")]
    [InlineData("http://[0:0:0:0:0:0:0:1]:8080", "not a loopback address")]
    [InlineData("http://[::ffff:127.0.0.1]:8080", "not a loopback address")]
    [InlineData("http://0.0.0.0:8080", "not a loopback address")]
    [InlineData("http://127.1:8080", "not a loopback address")]
    [InlineData("http://127.0.0.01:8080", "not a loopback address")]
    [InlineData("http://0x7f.0.0.1:8080", "not a loopback address")]
    [InlineData("http://127.0.0.256:8080", "not a loopback address")]
    [InlineData("http://127.0.0.1.5:8080", "not a loopback address")]
    [InlineData("https://127.0.0.1:8443", "https is not supported")]
    [InlineData("http://127.0.0.1", "has no port")]
    [InlineData("http://[::1]", "has no port")]
    [InlineData("http://127.0.0.1:", "'' is not a port number")]
    [InlineData("http://127.0.0.1:0", "'0' is not a port number")]
    [InlineData("http://127.0.0.1:65536", "'65536' is not a port number")]
    [InlineData("http://127.0.0.1:+80", "'+80' is not a port number")]
    [InlineData("http://127.0.0.1:080", "'080' is not a port number")]
    [InlineData("http://127.0.0.1:8080/base/", "something after the port")]
    [InlineData("http://127.0.0.1:8080//", "something after the port")]
    [InlineData("http://127.0.0.1:8080?x", "something after the port")]
    [InlineData("http://127.0.0.1:8080#x", "something after the port")]
    [InlineData("http://user@127.0.0.1:8080", "user info")]
    [InlineData("http://127.0.0.1:8080@10.0.0.1:80", "user info")]
    [InlineData("127.0.0.1:8080", "neither unix: nor http://")]
    [InlineData("tcp://127.0.0.1:8080", "neither unix: nor http://")]
    [InlineData("unix:relative/app.sock", "must be an absolute path")]
    [InlineData("unix:@abstract", "must be an absolute path")]
    [InlineData("unix:", "must be an absolute path")]
    [InlineData("unix:/srv/a/run/", "names a directory")]
    [InlineData("unix:/srv/a/../b/app.sock", "'..' segment")]
    [InlineData("unix:/srv/./app.sock", "'.' or '..' segment")]
    [InlineData("unix:/srv//app.sock", "empty, '.' or '..' segment")]
    [InlineData("unix:/srv/a\0b.sock", "NUL")]
    public void Anything_else_is_refused_saying_why_and_what_is_accepted(string? text, string why)
    {
        Assert.False(ProxyUpstream.TryParse(text, out _, out var error));
        Assert.Contains(why, error, StringComparison.Ordinal);
        Assert.EndsWith(ProxyUpstream.AcceptedForms, error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_socket_path_is_at_most_107_bytes_of_utf8()
    {
        Assert.True(ProxyUpstream.TryParse("unix:/" + new string('s', 106), out _, out _));
        Assert.False(ProxyUpstream.TryParse("unix:/" + new string('s', 107), out _, out var error));
        Assert.Contains("at most 107 bytes", error, StringComparison.Ordinal);
        Assert.False(ProxyUpstream.TryParse("unix:/" + new string('\u00e9', 54), out _, out error)); // 108 bytes
        Assert.Contains("at most 107 bytes", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Equality_is_on_what_is_reached_not_on_the_spelling()
    {
        static ProxyUpstream P(string text) => ProxyUpstream.TryParse(text, out var u, out var e) ? u : throw new InvalidOperationException(e);

        Assert.Equal(P("http://127.0.0.1:80"), P("HTTP://127.0.0.1:80/"));
        Assert.True(P("http://127.0.0.1:80") == P("Http://127.0.0.1:80"));
        Assert.Equal(P("http://127.0.0.1:80").GetHashCode(), P("HTTP://127.0.0.1:80/").GetHashCode());
        Assert.Equal(P("unix:/a.sock"), P("UNIX:/a.sock"));
        Assert.NotEqual(P("http://127.0.0.1:80"), P("http://127.0.0.2:80"));
        Assert.NotEqual(P("http://127.0.0.1:80"), P("http://127.0.0.1:81"));
        Assert.NotEqual(P("http://127.0.0.1:80"), P("http://[::1]:80"));
        Assert.NotEqual(P("unix:/a.sock"), P("unix:/A.sock"));
        Assert.True(P("unix:/a.sock") != P("unix:/b.sock"));
        Assert.False(P("unix:/a.sock").Equals(null));
    }

    [Theory]
    [InlineData("/", "/")]
    [InlineData("/app", "/app/")]
    [InlineData("/app/", "/app/")]
    [InlineData("/a.b/c-d_e~f/", "/a.b/c-d_e~f/")]
    public void Prefixes_are_absolute_url_paths_given_a_trailing_slash(string prefix, string normalized)
    {
        Assert.True(ProxyPrefix.TryNormalize(prefix, out var result, out var error), error);
        Assert.Equal(normalized, result);
    }

    [Theory]
    [InlineData("", "not a URL path prefix")]
    [InlineData(null, "not a URL path prefix")]
    [InlineData("app/", "not a URL path prefix")]
    [InlineData("/app/../x/", "'..' segment")]
    [InlineData("/./", "'.' or '..' segment")]
    [InlineData("/..", "'.' or '..' segment")]
    [InlineData("//x/", "empty")]
    [InlineData("/a%2Fb/", "%")]
    [InlineData("/a b/", "space")]
    [InlineData("/a?b", "?")]
    [InlineData("/a#b", "#")]
    [InlineData("/a\\b/", "\\")]
    [InlineData("/a\tb/", "control character")]
    public void Other_prefixes_are_refused_saying_why(string? prefix, string why)
    {
        Assert.False(ProxyPrefix.TryNormalize(prefix, out _, out var error));
        Assert.Contains(why, error, StringComparison.Ordinal);
    }
}
