using System.Text;
using System.Text.RegularExpressions;
using Dispatch.TlsDispatcher.Tls;
using Xunit.Abstractions;

namespace Dispatch.TlsDispatcher.Tests.Tls;

public sealed partial class ClientHelloParserTests : IClassFixture<ClientHelloCaptures>
{
    private readonly ClientHelloCaptures _captures;
    private readonly ITestOutputHelper _output;

    public ClientHelloParserTests(ClientHelloCaptures captures, ITestOutputHelper output)
    {
        _captures = captures;
        _output = output;
    }

    [GeneratedRegex("^[a-z0-9_-]{1,63}(\\.[a-z0-9_-]{1,63})*$")]
    private static partial Regex HostNamePattern();

    private static ClientHelloResult Parse(ReadOnlySpan<byte> data, out ClientHelloInfo? info, out int needed, out string? error)
        => ClientHelloParser.TryParse(data, out info, out needed, out error);

    private static ClientHelloInfo ParseOk(byte[] data)
    {
        ClientHelloResult result = Parse(data, out ClientHelloInfo? info, out _, out string? error);
        Assert.True(result == ClientHelloResult.Ok, $"{result}: {error}");
        return info!;
    }

    private static string Malformed(byte[] data)
    {
        ClientHelloResult result = Parse(data, out ClientHelloInfo? info, out _, out string? error);
        Assert.Equal(ClientHelloResult.Malformed, result);
        Assert.Null(info);
        Assert.False(string.IsNullOrEmpty(error));
        return error!;
    }

    [Fact]
    public void Captures_were_recorded_from_real_clients()
    {
        foreach (CapturedHello hello in _captures.Hellos)
            _output.WriteLine($"{hello.Name}: {hello.Bytes.Length} bytes");
        Assert.Contains(_captures.Hellos, h => h.Name.StartsWith("SslStream", StringComparison.Ordinal));
        if (ExternalTool.Exists("openssl"))
            Assert.Contains(_captures.Hellos, h => h.Name.StartsWith("openssl", StringComparison.Ordinal));
        if (ExternalTool.Exists("curl"))
            Assert.Contains(_captures.Hellos, h => h.Name.StartsWith("curl", StringComparison.Ordinal));
    }

    [Fact]
    public void Real_client_hellos_parse()
    {
        foreach (CapturedHello hello in _captures.Hellos)
        {
            ClientHelloInfo info = ParseOk(hello.Bytes);
            _output.WriteLine($"{hello.Name}: sni={info.ServerName} alpn=[{string.Join(",", info.ApplicationProtocols)}] versions=[{string.Join(",", info.SupportedVersions.Select(v => v.ToString("X4")))}] suites={info.CipherSuites.Count} sigalgs={info.SignatureAlgorithms.Count} groups=[{string.Join(",", info.SupportedGroups)}] ext={info.ExtensionTypes.Count}");
            Assert.Equal(ClientHelloCaptures.ServerName, info.ServerName);
            Assert.Equal(hello.ExpectAlpn, info.ApplicationProtocols);
            Assert.Equal(hello.ExpectTls12, info.OffersTls12);
            Assert.Equal(hello.ExpectTls13, info.OffersTls13);
            Assert.Equal(hello.Bytes.Length, info.Length);
            Assert.Equal(1, info.RecordCount);
            Assert.Equal(0x0303, info.LegacyVersion);
            Assert.NotEmpty(info.CipherSuites);
            Assert.NotEmpty(info.SignatureAlgorithms);
            Assert.NotEmpty(info.SupportedGroups);
            Assert.True(info.HasExtension(0));
            Assert.True(info.HasExtension(16));
            if (hello.ExpectTls12)
                Assert.True(info.CipherSuites.Contains((ushort)0xC02B) || info.CipherSuites.Contains((ushort)0xC02F), hello.Name);
        }
    }

    [Fact]
    public void Every_prefix_is_incomplete_with_a_truthful_lower_bound()
    {
        foreach (CapturedHello hello in _captures.Hellos)
        {
            byte[] data = hello.Bytes;
            for (int k = 0; k < data.Length; k++)
            {
                ClientHelloResult result = Parse(data.AsSpan(0, k), out ClientHelloInfo? info, out int needed, out string? error);
                Assert.True(result == ClientHelloResult.Incomplete, $"{hello.Name} prefix {k}: {result} {error}");
                Assert.Null(info);
                Assert.InRange(needed, k + 1, data.Length);
            }

            ParseOk(data);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(16)]
    [InlineData(100)]
    [InlineData(511)]
    public void Hellos_spread_over_several_records_parse_the_same(int fragment)
    {
        foreach (CapturedHello hello in _captures.Hellos)
        {
            ClientHelloInfo single = ParseOk(hello.Bytes);
            byte[] fragmented = ClientHelloCaptures.Fragment(hello.Bytes, fragment);
            int records = (hello.Bytes.Length - 5 + fragment - 1) / fragment;
            if (records > ClientHelloParser.MaxRecords)
            {
                Assert.Contains($"more than {ClientHelloParser.MaxRecords} records", Malformed(fragmented), StringComparison.Ordinal);
                continue;
            }

            ClientHelloInfo info = ParseOk(fragmented);
            Assert.Equal(fragmented.Length, info.Length);
            Assert.Equal(records, info.RecordCount);
            Assert.Equal(single.ServerName, info.ServerName);
            Assert.Equal(single.ApplicationProtocols, info.ApplicationProtocols);
            Assert.Equal(single.CipherSuites, info.CipherSuites);
            Assert.Equal(single.SupportedVersions, info.SupportedVersions);
            Assert.Equal(single.ExtensionTypes, info.ExtensionTypes);

            // Every prefix of the fragmented form is incomplete, with a bound that never overshoots.
            for (int k = 0; k < fragmented.Length; k++)
            {
                ClientHelloResult result = Parse(fragmented.AsSpan(0, k), out _, out int needed, out string? error);
                Assert.True(result == ClientHelloResult.Incomplete, $"{hello.Name}/{fragment} prefix {k}: {result} {error}");
                Assert.InRange(needed, k + 1, fragmented.Length);
            }
        }
    }

    [Fact]
    public void Synthetic_hello_in_one_byte_records_up_to_the_record_limit()
    {
        byte[] hello = new HelloBuilder { SessionId = [], CipherSuites = [0xC02B], Extensions = null }.Build();
        Assert.True(hello.Length - 5 <= ClientHelloParser.MaxRecords, $"{hello.Length}");
        ClientHelloInfo info = ParseOk(ClientHelloCaptures.Fragment(hello, 1));
        Assert.Equal(hello.Length - 5, info.RecordCount);
    }

    [Fact]
    public void Bytes_after_the_hello_records_are_left_alone()
    {
        foreach (CapturedHello hello in _captures.Hellos)
        {
            byte[] withCcs = [.. hello.Bytes, 20, 3, 3, 0, 1, 1, 23, 3, 3, 0, 5, 1, 2, 3, 4, 5];
            ClientHelloInfo info = ParseOk(withCcs);
            Assert.Equal(hello.Bytes.Length, info.Length);
        }
    }

    [Fact]
    public void Lengths_that_lie_by_one_are_never_accepted()
    {
        int checkedFields = 0;
        foreach (CapturedHello hello in _captures.Hellos)
        {
            foreach ((int offset, int size, string name) in HelloBuilder.LengthFields(hello.Bytes))
            {
                int value = 0;
                for (int i = 0; i < size; i++)
                    value = (value << 8) | hello.Bytes[offset + i];
                foreach (int delta in new[] { -1, +1 })
                {
                    int changed = value + delta;
                    if (changed < 0 || changed >= 1 << (8 * size))
                        continue;
                    byte[] copy = (byte[])hello.Bytes.Clone();
                    for (int i = size - 1, v = changed; i >= 0; i--, v >>= 8)
                        copy[offset + i] = (byte)v;
                    ClientHelloResult result = Parse(copy, out _, out _, out string? error);
                    Assert.True(result is ClientHelloResult.Malformed or ClientHelloResult.Incomplete, $"{hello.Name}: {name} {delta:+0;-0}: {result}");
                    if (delta == -1 || result == ClientHelloResult.Malformed)
                        Assert.True(result != ClientHelloResult.Malformed || !string.IsNullOrEmpty(error));
                    checkedFields++;
                }
            }
        }

        Assert.True(checkedFields > 50, $"only {checkedFields} mutations");
    }

    [Fact]
    public void Truncated_handshake_inside_a_complete_record_is_malformed()
    {
        foreach (CapturedHello hello in _captures.Hellos)
        {
            // Shorten the record and the handshake message together by 10 bytes: the structure no longer adds up.
            byte[] copy = hello.Bytes[..^10];
            int recordLength = ((copy[3] << 8) | copy[4]) - 10;
            copy[3] = (byte)(recordLength >> 8);
            copy[4] = (byte)recordLength;
            int handshakeLength = recordLength - 4;
            copy[6] = (byte)(handshakeLength >> 16);
            copy[7] = (byte)(handshakeLength >> 8);
            copy[8] = (byte)handshakeLength;
            _output.WriteLine($"{hello.Name}: {Malformed(copy)}");
        }
    }

    [Fact]
    public void Random_bytes_never_throw()
    {
        var counts = new Dictionary<ClientHelloResult, int>();
        for (int seed = 0; seed < 4000; seed++)
        {
            var random = new Random(seed);
            byte[] data = new byte[random.Next(0, 1200)];
            random.NextBytes(data);
            if (seed % 2 == 0 && data.Length >= 9)
            {
                // Plausible headers so the walk goes deeper.
                data[0] = 22;
                data[1] = 3;
                data[2] = (byte)random.Next(0, 4);
                int recordLength = random.Next(0, 2) == 0 ? data.Length - 5 : random.Next(0, 1 << 16);
                data[3] = (byte)(recordLength >> 8);
                data[4] = (byte)recordLength;
                data[5] = 1;
                int handshakeLength = random.Next(0, 2) == 0 ? data.Length - 9 : random.Next(0, 1 << 15);
                data[6] = (byte)(handshakeLength >> 16);
                data[7] = (byte)(handshakeLength >> 8);
                data[8] = (byte)handshakeLength;
            }

            ClientHelloResult result = Parse(data, out ClientHelloInfo? info, out int needed, out string? error);
            counts[result] = counts.GetValueOrDefault(result) + 1;
            CheckInvariants(data, result, info, needed, error);
        }

        _output.WriteLine(string.Join(", ", counts.Select(kv => $"{kv.Key}={kv.Value}")));
    }

    [Fact]
    public void Mutated_real_hellos_never_throw()
    {
        Assert.NotEmpty(_captures.Hellos);
        var counts = new Dictionary<ClientHelloResult, int>();
        for (int seed = 0; seed < 6000; seed++)
        {
            var random = new Random(seed);
            CapturedHello hello = _captures.Hellos[seed % _captures.Hellos.Count];
            byte[] data = seed % 3 == 0 ? ClientHelloCaptures.Fragment(hello.Bytes, random.Next(1, 300)) : (byte[])hello.Bytes.Clone();
            int mutations = random.Next(1, 8);
            for (int m = 0; m < mutations; m++)
            {
                int at = random.Next(0, data.Length);
                switch (random.Next(0, 4))
                {
                    case 0:
                        data[at] = (byte)random.Next(0, 256);
                        break;
                    case 1:
                        data[at] ^= (byte)(1 << random.Next(0, 8));
                        break;
                    case 2:
                        data = data[..at];
                        break;
                    default:
                        data = [.. data[..at], (byte)random.Next(0, 256), .. data[at..]];
                        break;
                }

                if (data.Length == 0)
                    break;
            }

            ClientHelloResult result = Parse(data, out ClientHelloInfo? info, out int needed, out string? error);
            counts[result] = counts.GetValueOrDefault(result) + 1;
            CheckInvariants(data, result, info, needed, error);
        }

        _output.WriteLine(string.Join(", ", counts.Select(kv => $"{kv.Key}={kv.Value}")));
    }

    private static void CheckInvariants(byte[] data, ClientHelloResult result, ClientHelloInfo? info, int needed, string? error)
    {
        switch (result)
        {
            case ClientHelloResult.Ok:
                Assert.NotNull(info);
                Assert.InRange(info.Length, 9, data.Length);
                Assert.Null(error);
                if (info.ServerName is not null)
                {
                    Assert.Matches(HostNamePattern(), info.ServerName);
                    Assert.InRange(info.ServerName.Length, 1, 253);
                }

                Assert.All(info.ApplicationProtocols, p => Assert.InRange(p.Length, 1, 255));
                Assert.NotEmpty(info.CipherSuites);
                break;
            case ClientHelloResult.Incomplete:
                Assert.Null(info);
                Assert.True(needed > data.Length, $"needed {needed} for {data.Length} bytes");
                break;
            case ClientHelloResult.Malformed:
                Assert.Null(info);
                Assert.False(string.IsNullOrEmpty(error));
                break;
            case ClientHelloResult.NotTls:
                Assert.Null(info);
                break;
            default:
                Assert.Fail($"unexpected result {result}");
                break;
        }
    }

    [Fact]
    public void Not_tls()
    {
        Assert.Equal(ClientHelloResult.NotTls, ClientHelloParser.TryParse("GET / HTTP/1.1\r\n"u8, out _));
        Assert.Equal(ClientHelloResult.NotTls, ClientHelloParser.TryParse(new byte[] { 0x80, 0x2e, 0x01, 0x03, 0x01 }, out _)); // SSLv2 hello
        Assert.Equal(ClientHelloResult.NotTls, ClientHelloParser.TryParse(new byte[] { 22, 0 }, out _));
        Assert.Equal(ClientHelloResult.NotTls, ClientHelloParser.TryParse(new byte[] { 23, 3, 3, 0, 1, 0 }, out _));
        Assert.Equal(ClientHelloResult.Incomplete, ClientHelloParser.TryParse(new byte[] { 22 }, out _));
        Assert.Equal(ClientHelloResult.Incomplete, ClientHelloParser.TryParse(ReadOnlySpan<byte>.Empty, out _));
    }

    [Fact]
    public void Synthetic_hello_with_everything()
    {
        byte[] data = new HelloBuilder()
            .WithSni("Foo.Example.")
            .WithAlpn("h2", "http/1.1")
            .WithVersions(0x0a0a, 0x0304, 0x0303)
            .WithUInt16List(13, 0x0403, 0x0804, 0x0401)
            .WithUInt16List(10, 0x001d, 0x0017)
            .With(0xff01, [0])
            .Build();
        ClientHelloInfo info = ParseOk(data);
        Assert.Equal("foo.example", info.ServerName);
        Assert.Equal(["h2", "http/1.1"], info.ApplicationProtocols);
        Assert.True(info.OffersTls12);
        Assert.True(info.OffersTls13);
        Assert.Equal([0x0a0a, 0x0304, 0x0303], info.SupportedVersions);
        Assert.Equal([0x0403, 0x0804, 0x0401], info.SignatureAlgorithms);
        Assert.Equal([0x001d, 0x0017], info.SupportedGroups);
        Assert.Equal([0xC02B, 0xC02F, 0xCCA9], info.CipherSuites);
        Assert.Equal([0, 16, 43, 13, 10, 0xff01], info.ExtensionTypes);
        Assert.Equal(32, info.SessionIdLength);
        Assert.Equal(0x0301, info.RecordVersion);
        Assert.Equal(data.Length, info.Length);
    }

    [Fact]
    public void No_extensions_at_all_is_a_valid_tls12_hello()
    {
        ClientHelloInfo info = ParseOk(new HelloBuilder { Extensions = null }.Build());
        Assert.Null(info.ServerName);
        Assert.Empty(info.ApplicationProtocols);
        Assert.True(info.OffersTls12);
        Assert.False(info.OffersTls13);
        Assert.Empty(info.ExtensionTypes);

        ClientHelloInfo old = ParseOk(new HelloBuilder { Extensions = null, LegacyVersion = 0x0301 }.Build());
        Assert.False(old.OffersTls12);
    }

    [Fact]
    public void Tls13_only_client()
    {
        ClientHelloInfo info = ParseOk(new HelloBuilder().WithSni("a.example").WithVersions(0x0304).Build());
        Assert.True(info.OffersTls13);
        Assert.False(info.OffersTls12);
    }

    [Fact]
    public void Duplicate_extensions_are_malformed()
    {
        Assert.Contains("duplicate extension 0", Malformed(new HelloBuilder().WithSni("a.example").WithSni("b.example").Build()), StringComparison.Ordinal);
        Assert.Contains("duplicate extension 4660", Malformed(new HelloBuilder().With(0x1234, []).With(0x1234, [1]).Build()), StringComparison.Ordinal);
        Assert.Contains("duplicate", Malformed(new HelloBuilder().With(0xffff, []).With(1, []).With(0xffff, []).Build()), StringComparison.Ordinal);
    }

    [Fact]
    public void Trailing_garbage_is_malformed()
    {
        string inBody = Malformed(new HelloBuilder { BodyTrailer = [1, 2, 3] }.WithSni("a.example").Build());
        Assert.Contains("trailing", inBody, StringComparison.Ordinal);
        string inRecord = Malformed(new HelloBuilder { RecordTrailer = [1, 2, 3] }.WithSni("a.example").Build());
        Assert.Contains("after the end of the ClientHello", inRecord, StringComparison.Ordinal);
        string noExtensions = Malformed(new HelloBuilder { Extensions = null, BodyTrailer = [7] }.Build());
        Assert.Contains("extensions length", noExtensions, StringComparison.Ordinal);
    }

    [Fact]
    public void Precise_errors()
    {
        var builder = new HelloBuilder().WithSni("a.example").With(0x99, new byte[20]);
        byte[] data = builder.Build();

        // Make the last extension claim 300 bytes.
        int at = data.Length - 20 - 2;
        data[at] = 1;
        data[at + 1] = 44;
        Assert.Equal("extension 153 length 300 exceeds remaining 20 bytes", Malformed(data));

        Assert.Equal("session id length 33 exceeds 32", Malformed(new HelloBuilder { SessionId = new byte[33] }.Build()));
        Assert.Contains("compression methods do not include null", Malformed(new HelloBuilder { CompressionMethods = [1] }.Build()), StringComparison.Ordinal);
        Assert.Contains("compression methods list is empty", Malformed(new HelloBuilder { CompressionMethods = [] }.Build()), StringComparison.Ordinal);
        Assert.Contains("cipher suites length 0", Malformed(new HelloBuilder { CipherSuites = [] }.Build()), StringComparison.Ordinal);
        Assert.Contains("handshake message type 2", Malformed(new HelloBuilder { HandshakeType = 2 }.Build()), StringComparison.Ordinal);
        Assert.Contains("legacy_version", Malformed(new HelloBuilder { LegacyVersion = 0x0202 }.Build()), StringComparison.Ordinal);
    }

    [Fact]
    public void Odd_cipher_suites_length_is_malformed()
    {
        byte[] data = new HelloBuilder { Extensions = null }.Build();
        int at = 9 + 2 + 32 + 1 + 32; // cipher suites length
        data[at + 1] = 5;
        Assert.Contains("cipher suites length 5 must be even", Malformed(data), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("a\0b.example", "0x00")]
    [InlineData("a b.example", "0x20")]
    [InlineData("a/b.example", "0x2F")]
    [InlineData("a:443", "0x3A")]
    [InlineData("caf\u00e9.example", "0xE9")]
    [InlineData("a..example", "empty label")]
    [InlineData(".example", "empty label")]
    [InlineData("example..", "empty last label")]
    [InlineData(".", "empty host name")]
    [InlineData("", "empty host name")]
    public void Bad_host_names_are_malformed(string name, string expected)
    {
        string error = Malformed(new HelloBuilder().WithSniBytes(Encoding.Latin1.GetBytes(name)).Build());
        Assert.Contains(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public void Utf8_host_name_is_malformed()
    {
        Assert.Contains("0xC3", Malformed(new HelloBuilder().WithSniBytes(Encoding.UTF8.GetBytes("caf\u00e9.example")).Build()), StringComparison.Ordinal);
    }

    [Fact]
    public void Host_name_length_limits()
    {
        string label63 = new('a', 63);
        Assert.Equal(label63 + ".example", ParseOk(new HelloBuilder().WithSni(label63 + ".example").Build()).ServerName);
        Assert.Contains("label longer than 63", Malformed(new HelloBuilder().WithSni(new string('a', 64) + ".example").Build()), StringComparison.Ordinal);

        string name253 = string.Join('.', Enumerable.Repeat(new string('b', 63), 3)) + "." + new string('c', 61); // 3*64 + 61 = 253
        Assert.Equal(253, name253.Length);
        Assert.Equal(name253, ParseOk(new HelloBuilder().WithSni(name253).Build()).ServerName);
        Assert.Equal(name253, ParseOk(new HelloBuilder().WithSni(name253 + ".").Build()).ServerName);
        Assert.Contains("exceeds 253", Malformed(new HelloBuilder().WithSni(name253 + "e").Build()), StringComparison.Ordinal);
    }

    [Fact]
    public void Host_name_is_lowercased_and_tolerates_underscore()
    {
        Assert.Equal("my_host-1.example", ParseOk(new HelloBuilder().WithSni("My_Host-1.EXAMPLE").Build()).ServerName);
        Assert.Equal("127.0.0.1", ParseOk(new HelloBuilder().WithSni("127.0.0.1").Build()).ServerName);
    }

    [Fact]
    public void Server_name_list_rules()
    {
        // Two host_names in one extension.
        Assert.Contains("more than one host_name", Malformed(new HelloBuilder().WithSni("a.example", "b.example").Build()), StringComparison.Ordinal);

        // Only an unknown name type: no host_name.
        byte[] unknownOnly = HelloBuilder.SniData([7], ["abc"u8.ToArray()]);
        Assert.Contains("no host_name", Malformed(new HelloBuilder().With(0, unknownOnly).Build()), StringComparison.Ordinal);

        // An unknown type next to a host_name is skipped.
        byte[] mixed = HelloBuilder.SniData([7, 0], ["xyz"u8.ToArray(), "ok.example"u8.ToArray()]);
        Assert.Equal("ok.example", ParseOk(new HelloBuilder().With(0, mixed).Build()).ServerName);

        Assert.Contains("empty list", Malformed(new HelloBuilder().With(0, [0, 0]).Build()), StringComparison.Ordinal);
        Assert.Contains("no list length", Malformed(new HelloBuilder().With(0, []).Build()), StringComparison.Ordinal);
    }

    [Fact]
    public void Alpn_rules()
    {
        Assert.Contains("empty protocol list", Malformed(new HelloBuilder().With(16, [0, 0]).Build()), StringComparison.Ordinal);
        Assert.Contains("empty protocol name", Malformed(new HelloBuilder().With(16, [0, 4, 2, (byte)'h', (byte)'2', 0]).Build()), StringComparison.Ordinal);
        Assert.Contains("exceeds", Malformed(new HelloBuilder().With(16, [0, 3, 5, (byte)'h', (byte)'2']).Build()), StringComparison.Ordinal);
        string longName = new('p', 255);
        Assert.Equal([longName, "x"], ParseOk(new HelloBuilder().WithAlpn(longName, "x").Build()).ApplicationProtocols);
    }

    [Fact]
    public void List_extension_rules()
    {
        Assert.Contains("supported_versions", Malformed(new HelloBuilder().With(43, [3, 3, 4, 3]).Build()), StringComparison.Ordinal);
        Assert.Contains("supported_versions", Malformed(new HelloBuilder().With(43, [0]).Build()), StringComparison.Ordinal);
        Assert.Contains("supported_versions", Malformed(new HelloBuilder().With(43, []).Build()), StringComparison.Ordinal);
        Assert.Contains("signature_algorithms", Malformed(new HelloBuilder().With(13, [0, 3, 4, 3, 1]).Build()), StringComparison.Ordinal);
        Assert.Contains("supported_groups", Malformed(new HelloBuilder().With(10, [0, 0]).Build()), StringComparison.Ordinal);
        Assert.Contains("supported_groups", Malformed(new HelloBuilder().With(10, [0, 4, 0, 23]).Build()), StringComparison.Ordinal);
    }

    [Fact]
    public void Record_layer_rules()
    {
        byte[] hello = new HelloBuilder().WithSni("a.example").Build();

        // A later record of another content type.
        byte[] split = ClientHelloCaptures.Fragment(hello, 40);
        split[45] = 23;
        Assert.Contains("content type 23", Malformed(split), StringComparison.Ordinal);

        // A zero-length record.
        byte[] empty = [22, 3, 1, 0, 0, .. hello];
        Assert.Contains("empty handshake fragment", Malformed(empty), StringComparison.Ordinal);

        // Oversized record and oversized handshake message.
        Assert.Contains("more than 16384", Malformed([22, 3, 1, 0x40, 0x01, 1, 0, 0, 10]), StringComparison.Ordinal);
        Assert.Contains("exceeds the limit", Malformed([22, 3, 1, 0x10, 0x00, 1, 0x00, 0x40, 0x01]), StringComparison.Ordinal);

        // Largest accepted: a 16384-byte body spread over two records (padding extension).
        var big = new HelloBuilder().WithSni("big.example");
        byte[] probe = big.Build();
        int bodyWithoutPadding = probe.Length - 9;
        big.With(21, new byte[16384 - bodyWithoutPadding - 4]);
        byte[] bigRecord = big.Build();
        Assert.Equal(16384 + 9, bigRecord.Length);
        byte[] twoRecords = ClientHelloCaptures.Fragment(bigRecord, 16384);
        ClientHelloInfo info = ParseOk(twoRecords);
        Assert.Equal(2, info.RecordCount);
        Assert.Equal("big.example", info.ServerName);
    }

    [Fact]
    public void Incomplete_reports_bytes_needed()
    {
        byte[] hello = new HelloBuilder().WithSni("a.example").Build();
        Assert.Equal(ClientHelloResult.Incomplete, ClientHelloParser.TryParse(hello.AsSpan(0, 3), out _, out int needed, out _));
        Assert.Equal(9, needed); // record header + handshake header, at least
        Assert.Equal(ClientHelloResult.Incomplete, ClientHelloParser.TryParse(hello.AsSpan(0, 9), out _, out needed, out _));
        Assert.Equal(hello.Length, needed); // the record length is known: all of it
        byte[] split = ClientHelloCaptures.Fragment(hello, 20);
        Assert.Equal(ClientHelloResult.Incomplete, ClientHelloParser.TryParse(split.AsSpan(0, 25), out _, out needed, out _));
        Assert.Equal(25 + 5 + (hello.Length - 5 - 20), needed); // one more header and the rest of the message
    }
}
