using System.Net;
using System.Text;
using Dispatch.TlsDispatcher.Net;

namespace Dispatch.TlsDispatcher.Tests.Net;

public class ProxyProtocolTests
{
    // HAProxy's proxy-protocol.txt, section 2.1: the longest v1 line, CRLF included, is 107 bytes (this one, 104).
    private const string LongestTcp6 = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

    [Fact]
    public void A_v1_header_and_the_clients_bytes_after_it()
    {
        var data = Encoding.ASCII.GetBytes("PROXY TCP4 203.0.113.7 127.0.0.1 51000 8080\r\nGET / HTTP/1.1\r\n");
        Assert.Equal(ProxyHeaderStatus.Ok, ProxyProtocol.Parse(data, out var source, out var consumed, out _));
        Assert.Equal(new IPEndPoint(IPAddress.Parse("203.0.113.7"), 51000), source);
        Assert.Equal(45, consumed);
    }

    [Fact]
    public void The_longest_v1_header_is_accepted()
    {
        var data = Encoding.ASCII.GetBytes(LongestTcp6 + "GET / HTTP/1.1\r\n");
        Assert.Equal(ProxyHeaderStatus.Ok, ProxyProtocol.Parse(data, out var source, out var consumed, out _));
        Assert.Equal(LongestTcp6.Length, consumed);
        Assert.Equal(65535, source!.Port);
    }

    // Found by the fuzzing harness's check (fuzz/Dispatch.Fuzz, target proxyprotocol): the end of a v1 line was looked
    // for in everything read so far (up to 528 bytes), so an UNKNOWN line of 216 bytes was accepted, and whatever its
    // first 528 bytes held before a CRLF was swallowed as the header instead of being the client's.
    [Theory]
    [InlineData("PROXY UNKNOWN ", 200)]
    [InlineData("PROXY TCP4 203.0.113.7 127.0.0.1 51000 8080", 100)]
    public void A_v1_line_longer_than_107_bytes_is_refused(string start, int padding)
    {
        var data = Encoding.ASCII.GetBytes(start + new string(' ', padding) + "\r\nGET / HTTP/1.1\r\n\r\n");
        Assert.Equal(ProxyHeaderStatus.Invalid, ProxyProtocol.Parse(data, out var source, out var consumed, out var error));
        Assert.Null(source);
        Assert.Equal("PROXY v1 header longer than 107 bytes", error);
        Assert.Equal(0, consumed);
    }

    [Fact]
    public void A_v1_line_without_its_end_yet_is_incomplete_up_to_107_bytes()
    {
        var data = Encoding.ASCII.GetBytes("PROXY UNKNOWN " + new string(' ', 92));
        Assert.Equal(106, data.Length);
        Assert.Equal(ProxyHeaderStatus.Incomplete, ProxyProtocol.Parse(data, out _, out _, out _));
        Assert.Equal(ProxyHeaderStatus.Invalid, ProxyProtocol.Parse([.. data, (byte)' '], out _, out _, out _));
    }
}
