using System.Text;
using Dispatch.Wire;
using Dispatch.Wire.Identity;

namespace Dispatch.Tests.Wire.Identity;

public sealed class BasicCredentialsTests
{
    private static byte[] Header(string userPass, string scheme = "Basic") => Encoding.ASCII.GetBytes($"{scheme} {Convert.ToBase64String(Encoding.UTF8.GetBytes(userPass))}");

    [Fact]
    public void Basic_login_and_password_are_parsed()
    {
        Assert.True(BasicCredentials.TryParse(Header("alice:pa:ss wörd"), out var login, out var password));
        Assert.Equal("alice", login);
        Assert.Equal("pa:ss wörd", Encoding.UTF8.GetString(password));
        Assert.True(BasicCredentials.TryParse(Header("bob.smith-2:x", "basic"), out login, out _));
        Assert.Equal("bob.smith-2", login);
    }

    [Theory]
    [InlineData("Bearer abc")]
    [InlineData("Basic")]
    [InlineData("Basic !!!")]
    [InlineData("Basic YWxpY2U=")] // no colon
    [InlineData("Basic OnB3")] // empty login
    [InlineData("Basic Li4vZXRjOnB3")] // "../etc:pw"
    [InlineData("Basic YWxpY2U6cHcKeA==")] // control character in the password
    public void Anything_else_is_refused(string value)
    {
        Assert.False(BasicCredentials.TryParse(Encoding.ASCII.GetBytes(value), out var login, out var password));
        Assert.Equal(string.Empty, login);
        Assert.Empty(password);
    }

    [Fact]
    public void A_password_longer_than_the_limit_is_refused()
    {
        Assert.True(BasicCredentials.TryParse(Header("a:" + new string('x', BasicCredentials.MaxPassword)), out _, out _));
        Assert.False(BasicCredentials.TryParse(Header("a:" + new string('x', BasicCredentials.MaxPassword + 1)), out _, out _));
    }

    [Fact]
    public void Authorization_fields_of_a_head_are_found_and_counted()
    {
        var head = "GET / HTTP/1.1\r\nHost: x\r\nauthorization: Basic YTpi\r\n\r\n"u8;
        Assert.Equal(1, BasicCredentials.FindAuthorization(head, out var range));
        Assert.Equal("Basic YTpi", Encoding.ASCII.GetString(head[range]).Trim());
        Assert.Equal(0, BasicCredentials.FindAuthorization("GET / HTTP/1.1\r\nHost: x\r\nX-Authorization: y\r\n\r\n"u8, out _));
        Assert.Equal(2, BasicCredentials.FindAuthorization("GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n"u8, out _));
    }

    [Fact]
    public void A_handed_connection_carries_decrypted_plaintext_and_older_layouts_still_decode()
    {
        var session = new Dispatch.Wire.Tls.TlsSessionState(Dispatch.Wire.Tls.TlsSessionState.Tls13, 0x1301, new byte[32], new byte[32], [], [], 1, 2);
        var with = new Connection(7, ConnectionMode.HandedTls, AppProtocol.Http1, "127.0.0.1:1", "127.0.0.1:2", "a", "TLSv1.3", "TLS_AES_128_GCM_SHA256", new byte[] { 1, 2 }, session, "GET / HTTP/1.1\r\n\r\n"u8.ToArray());
        var decoded = RoundTrip(with);
        Assert.Equal("GET / HTTP/1.1\r\n\r\n"u8.ToArray(), decoded.Plaintext.ToArray());
        Assert.Equal(new byte[] { 1, 2 }, decoded.Initial.ToArray());
        Assert.Equal(1UL, decoded.Session!.ReadSequence);

        var without = RoundTrip(with with { Plaintext = ReadOnlyMemory<byte>.Empty });
        Assert.True(without.Plaintext.IsEmpty);
        Assert.Throws<InvalidOperationException>(() => RoundTrip(new Connection(1, ConnectionMode.PlainHttp, AppProtocol.Http1, "c", "l", null, null, null, ReadOnlyMemory<byte>.Empty, null, new byte[1])));
    }

    private static Connection RoundTrip(Connection message)
    {
        var buffer = new byte[200_000];
        var writer = new WireWriter(buffer);
        message.Encode(ref writer);
        var reader = new WireReader(buffer.AsSpan(0, writer.Length));
        var decoded = Connection.Decode(ref reader);
        reader.End();
        return decoded;
    }
}
