using Dispatch.Worker.FastCgi;

namespace Dispatch.Worker.Tests.FastCgi;

/// <summary>Record headers and name-value pairs, checked against the specification's layouts.</summary>
public sealed class FastCgiRecordTests
{
    [Fact]
    public void A_header_is_version_type_request_id_length_padding_reserved()
    {
        var header = new byte[8];
        FastCgiRecord.WriteHeader(header, FastCgiRecordType.Stdin, 0x1234);
        Assert.Equal(new byte[] { 1, 5, 0, 1, 0x12, 0x34, 0, 0 }, header);
        Assert.Throws<ArgumentOutOfRangeException>(() => FastCgiRecord.WriteHeader(header, FastCgiRecordType.Stdin, 65536));
    }

    [Theory]
    [InlineData(new byte[] { 1, 6, 0, 1, 0xff, 0xff, 255, 0 }, FastCgiRecordType.Stdout, 65535, 255)]
    [InlineData(new byte[] { 1, 7, 0, 1, 0, 3, 5, 9 }, FastCgiRecordType.Stderr, 3, 5)]
    [InlineData(new byte[] { 1, 3, 0, 1, 0, 8, 0, 0 }, FastCgiRecordType.EndRequest, 8, 0)]
    public void Responder_records_parse(byte[] header, object type, int length, int padding)
    {
        Assert.Equal(((FastCgiRecordType)type, length, padding), FastCgiRecord.ParseHeader(header));
    }

    [Theory]
    [InlineData(new byte[] { 0, 6, 0, 1, 0, 0, 0, 0 }, "record version 0, not 1")]
    [InlineData(new byte[] { 2, 6, 0, 1, 0, 0, 0, 0 }, "record version 2, not 1")]
    [InlineData(new byte[] { 1, 1, 0, 1, 0, 8, 0, 0 }, "unexpected record type 1")]
    [InlineData(new byte[] { 1, 5, 0, 1, 0, 0, 0, 0 }, "unexpected record type 5")]
    [InlineData(new byte[] { 1, 10, 0, 0, 0, 0, 0, 0 }, "unexpected record type 10 (request id 0)")]
    [InlineData(new byte[] { 1, 11, 0, 0, 0, 8, 0, 0 }, "unexpected record type 11")]
    [InlineData(new byte[] { 1, 200, 0, 1, 0, 0, 0, 0 }, "unexpected record type 200")]
    [InlineData(new byte[] { 1, 6, 0, 2, 0, 0, 0, 0 }, "record for request id 2, not 1")]
    [InlineData(new byte[] { 1, 6, 0, 0, 0, 0, 0, 0 }, "record for request id 0, not 1")]
    [InlineData(new byte[] { 1, 3, 0, 1, 0, 7, 0, 0 }, "FCGI_END_REQUEST with 7 bytes of content, not 8")]
    [InlineData(new byte[] { 1, 3, 0, 1, 0xff, 0xff, 0, 0 }, "FCGI_END_REQUEST with 65535 bytes of content, not 8")]
    public void Anything_else_is_a_protocol_error(byte[] header, string message)
    {
        var e = Assert.Throws<FastCgiProtocolException>(() => FastCgiRecord.ParseHeader(header));
        Assert.StartsWith(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Pairs_use_one_byte_lengths_below_128_and_four_bytes_with_the_top_bit_above()
    {
        var p = new FastCgiParams();
        p.Add("A", "bc");
        p.Add("LONG", new string('x', 200));
        var encoded = p.Encoded.ToArray();
        Assert.Equal(new byte[] { 1, 2, (byte)'A', (byte)'b', (byte)'c' }, encoded[..5]);
        Assert.Equal(new byte[] { 4, 0x80, 0, 0, 200 }, encoded[5..10]);
        Assert.Equal([new("A", "bc"), new("LONG", new string('x', 200))], FastCgiParams.Decode(encoded));
        Assert.Throws<FormatException>(() => FastCgiParams.Decode(encoded.AsSpan(0, encoded.Length - 1)));
    }

    [Fact]
    public void Parameters_are_bounded()
    {
        var p = new FastCgiParams();
        Assert.Throws<InvalidOperationException>(() => p.Add("BIG", new string('x', FastCgiParams.MaxEncodedBytes)));
    }
}
