using System.Text;
using Dispatch.Worker.Http;

namespace Dispatch.Worker.Tests;

/// <summary>The CGI response header parser on its own.</summary>
public sealed class CgiResponseHeadTests
{
    [Theory]
    [InlineData("Content-Type: text/plain\n\nbody", 25, 26)]
    [InlineData("Content-Type: text/plain\r\n\r\nbody", 26, 28)]
    [InlineData("A: 1\r\nB: 2\n\nbody", 11, 12)]
    [InlineData("A: 1\n\r\nbody", 5, 7)]
    [InlineData("\nbody", 0, 1)]
    [InlineData("\r\nbody", 0, 2)]
    [InlineData("A: 1\nB: 2\n", 0, -1)]
    [InlineData("A: 1\r\n", 0, -1)]
    public void Finds_the_end_of_the_header_block(string data, int headLength, int bodyStart)
    {
        var bytes = Encoding.ASCII.GetBytes(data);
        Assert.Equal(bodyStart, CgiResponseHead.FindBodyStart(bytes, 0, out var length));
        if (bodyStart >= 0)
        {
            Assert.Equal(headLength, length);
        }
    }

    [Fact]
    public void Finds_the_end_when_fed_one_byte_at_a_time()
    {
        var bytes = Encoding.ASCII.GetBytes("Status: 200 OK\r\nX-A: b\r\n\r\nrest");
        var found = -1;
        var headLength = 0;
        for (var filled = 1; filled <= bytes.Length && found < 0; filled++)
        {
            found = CgiResponseHead.FindBodyStart(bytes.AsSpan(0, filled), filled - 1, out headLength);
        }

        Assert.Equal(26, found);
        Assert.Equal(24, headLength);
    }

    [Fact]
    public void Parses_status_type_location_length_and_passes_other_fields()
    {
        var head = Parse("Status: 201 Created\r\nContent-Type: text/html; charset=utf-8\r\nLocation: /x\r\nContent-Length: 12\r\n"
            + "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Tab:\tv\t \r\nConnection: close\r\nTransfer-Encoding: chunked\r\n");
        Assert.Equal(201, head.Status);
        Assert.Equal("Created", head.Reason);
        Assert.Equal("text/html; charset=utf-8", head.ContentType);
        Assert.Equal("/x", head.Location);
        Assert.Equal(12, head.ContentLength);
        Assert.Equal(
            [new("Set-Cookie", "a=1"), new("Set-Cookie", "b=2"), new KeyValuePair<string, string>("X-Tab", "v")],
            head.Fields);
    }

    [Theory]
    [InlineData("Location: http://example.com/\n", 302)]
    [InlineData("Location: /local\n", 302)]
    [InlineData("Status: 301\nLocation: /moved\n", 301)]
    [InlineData("Content-Type: text/plain\n", 200)]
    [InlineData("X-Only: yes\n", 200)]
    [InlineData("status: 404 Not Found\n", 404)]
    public void Status_defaults(string block, int status) => Assert.Equal(status, Parse(block).Status);

    [Theory]
    [InlineData("", "empty")]
    [InlineData("Content-Type text/plain\n", "without a field name")]
    [InlineData("HTTP/1.1 200 OK\r\n", "without a field name")]
    [InlineData("A: 1\n continued\n", "obs-fold")]
    [InlineData("Bad Name: x\n", "field name")]
    [InlineData("A: caf\u00e9\n", "non-ASCII")]
    [InlineData("A: x\u0001y\n", "control")]
    [InlineData("A: x\ry\n", "control")]
    [InlineData("Status: 99\n", "Status")]
    [InlineData("Status: 100 Continue\n", "Status")]
    [InlineData("Status: 600 Nope\n", "Status")]
    [InlineData("Status: 2000\n", "Status")]
    [InlineData("Status: abc\n", "Status")]
    [InlineData("Status: 200\nStatus: 201\n", "more than one Status")]
    [InlineData("Content-Type: a\nContent-Type: b\n", "more than one Content-Type")]
    [InlineData("Location: /a\nLocation: /b\n", "Location")]
    [InlineData("Content-Length: -1\n", "Content-Length")]
    [InlineData("Content-Length: 1 2\n", "Content-Length")]
    [InlineData("Content-Length: 99999999999999999999\n", "Content-Length")]
    [InlineData("Content-Length: 1\nContent-Length: 1\n", "Content-Length")]
    public void Rejects(string block, string reason)
    {
        Assert.False(CgiResponseHead.TryParse(Encoding.Latin1.GetBytes(block), out _, out var error));
        Assert.Contains(reason, error, StringComparison.Ordinal);
    }

    private static CgiResponseHead Parse(string block)
    {
        Assert.True(CgiResponseHead.TryParse(Encoding.ASCII.GetBytes(block), out var head, out var error), error);
        return head;
    }
}
