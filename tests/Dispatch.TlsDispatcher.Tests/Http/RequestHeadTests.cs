using System.Text;
using Dispatch.TlsDispatcher.Http;

namespace Dispatch.TlsDispatcher.Tests.Http;

public class RequestHeadTests
{
    private static (HeadStatus Status, string Host, int Code, string? Error) Parse(string head)
    {
        var bytes = Encoding.Latin1.GetBytes(head);
        var scanned = 0;
        var host = new char[256];
        var status = RequestHead.Parse(bytes, ref scanned, host, out var hostLength, out _, out var code, out var error);
        return (status, new string(host, 0, hostLength), code, error);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n", "a.localhost")]
    [InlineData("GET / HTTP/1.1\r\nhOsT:   A.LocalHost.:8080  \r\nAccept: */*\r\n\r\n", "a.localhost")]
    [InlineData("GET http://b.example/x?y HTTP/1.1\r\nHost: a.localhost\r\n\r\n", "b.example")]
    [InlineData("GET / HTTP/1.0\r\nHost: [::1]:80\r\n\r\n", "[::1]")]
    [InlineData("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "a")]
    public void Routes_on_the_host(string head, string host)
    {
        var r = Parse(head);
        Assert.Equal(HeadStatus.Complete, r.Status);
        Assert.Equal(host, r.Host);
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\n\r\n", 400, "missing Host")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host")]
    [InlineData("GET / HTTP/1.1\nHost: a\n\n", 400, "bare LF")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400, "folding")]
    [InlineData("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "header name")]
    [InlineData("GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n", 400, "control character")]
    [InlineData("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request line")]
    [InlineData("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP/1.0 and HTTP/1.1")]
    [InlineData("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid character in Host")]
    [InlineData("GET / HTTP/1.1\r\nHost: a:99999x\r\n\r\n", 400, "invalid port")]
    [InlineData("GET / HTTP/1.1\r\nHost: a:\r\n\r\n", 400, "invalid port")]
    [InlineData("GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "user information")]
    [InlineData("GET / HTTP/1.1\r\nHost: \r\n\r\n", 400, "empty Host")]
    [InlineData("GET / HTTP/1.0\r\n\r\n", 400, "needs one")]
    [InlineData("\x16\x03\x01\x00", 400, "does not start with a method")]
    public void Rejects_with_a_precise_reason(string head, int code, string reason)
    {
        var r = Parse(head);
        Assert.Equal(HeadStatus.Invalid, r.Status);
        Assert.Equal(code, r.Code);
        Assert.Contains(reason, r.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_head_split_at_every_byte_is_incomplete_until_its_end()
    {
        var head = Encoding.ASCII.GetBytes("GET /index.html HTTP/1.1\r\nUser-Agent: t\r\nHost: a.localhost\r\n\r\n");
        var host = new char[256];
        var scanned = 0;
        for (var n = 1; n < head.Length; n++)
        {
            var status = RequestHead.Parse(head.AsSpan(0, n), ref scanned, host, out _, out _, out _, out var error);
            Assert.True(status == HeadStatus.Incomplete, $"at {n} bytes: {status} {error}");
        }

        Assert.Equal(HeadStatus.Complete, RequestHead.Parse(head, ref scanned, host, out var length, out var headLength, out _, out _));
        Assert.Equal("a.localhost", new string(host, 0, length));
        Assert.Equal(head.Length, headLength);
    }

    [Fact]
    public void Random_bytes_never_throw()
    {
        var rng = new Random(1);
        var host = new char[256];
        for (var i = 0; i < 20000; i++)
        {
            var data = new byte[rng.Next(0, 200)];
            rng.NextBytes(data);
            if (i % 3 == 0 && data.Length > 30)
                Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: ").CopyTo(data, 0);
            var scanned = 0;
            _ = RequestHead.Parse(data, ref scanned, host, out _, out _, out _, out _);
        }
    }
}
