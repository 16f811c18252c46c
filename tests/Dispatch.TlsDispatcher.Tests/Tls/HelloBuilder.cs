using System.Buffers.Binary;
using System.Text;

namespace Dispatch.TlsDispatcher.Tests.Tls;

/// <summary>Builds synthetic ClientHellos (one record) for targeted parser tests.</summary>
public sealed class HelloBuilder
{
    public ushort RecordVersion { get; set; } = 0x0301;

    public byte HandshakeType { get; set; } = 1;

    public ushort LegacyVersion { get; set; } = 0x0303;

    public byte[] SessionId { get; set; } = new byte[32];

    public ushort[] CipherSuites { get; set; } = [0xC02B, 0xC02F, 0xCCA9];

    public byte[] CompressionMethods { get; set; } = [0];

    public List<(ushort Type, byte[] Data)>? Extensions { get; set; } = [];

    /// <summary>Bytes appended to the body after the extensions (inside the handshake message).</summary>
    public byte[] BodyTrailer { get; set; } = [];

    /// <summary>Bytes appended to the record after the handshake message (inside the record).</summary>
    public byte[] RecordTrailer { get; set; } = [];

    public HelloBuilder With(ushort type, byte[] data)
    {
        (Extensions ??= []).Add((type, data));
        return this;
    }

    public HelloBuilder WithSni(params string[] names) => With(0, SniData(names.Select(n => (byte)0).ToArray(), names.Select(Encoding.Latin1.GetBytes).ToArray()));

    public HelloBuilder WithSniBytes(byte[] name) => With(0, SniData([0], [name]));

    public HelloBuilder WithAlpn(params string[] names)
    {
        var list = new List<byte>();
        foreach (string name in names)
        {
            list.Add((byte)name.Length);
            list.AddRange(Encoding.Latin1.GetBytes(name));
        }

        return With(16, [.. U16(list.Count), .. list]);
    }

    public HelloBuilder WithVersions(params ushort[] versions)
    {
        var data = new List<byte> { (byte)(versions.Length * 2) };
        foreach (ushort v in versions)
            data.AddRange(U16(v));
        return With(43, [.. data]);
    }

    public HelloBuilder WithUInt16List(ushort type, params ushort[] values)
    {
        var data = new List<byte>(U16(values.Length * 2));
        foreach (ushort v in values)
            data.AddRange(U16(v));
        return With(type, [.. data]);
    }

    public static byte[] SniData(byte[] types, byte[][] names)
    {
        var list = new List<byte>();
        for (int i = 0; i < names.Length; i++)
        {
            list.Add(types[i]);
            list.AddRange(U16(names[i].Length));
            list.AddRange(names[i]);
        }

        return [.. U16(list.Count), .. list];
    }

    public byte[] Build()
    {
        var body = new List<byte>();
        body.AddRange(U16(LegacyVersion));
        body.AddRange(Enumerable.Range(0, 32).Select(i => (byte)i));
        body.Add((byte)SessionId.Length);
        body.AddRange(SessionId);
        body.AddRange(U16(CipherSuites.Length * 2));
        foreach (ushort suite in CipherSuites)
            body.AddRange(U16(suite));
        body.Add((byte)CompressionMethods.Length);
        body.AddRange(CompressionMethods);
        if (Extensions is not null)
        {
            var ext = new List<byte>();
            foreach ((ushort type, byte[] data) in Extensions)
            {
                ext.AddRange(U16(type));
                ext.AddRange(U16(data.Length));
                ext.AddRange(data);
            }

            body.AddRange(U16(ext.Count));
            body.AddRange(ext);
        }

        body.AddRange(BodyTrailer);

        var record = new List<byte> { 22 };
        record.AddRange(U16(RecordVersion));
        int handshakeLength = 4 + body.Count + RecordTrailer.Length;
        record.AddRange(U16(handshakeLength));
        record.Add(HandshakeType);
        record.Add((byte)(body.Count >> 16));
        record.Add((byte)(body.Count >> 8));
        record.Add((byte)body.Count);
        record.AddRange(body);
        record.AddRange(RecordTrailer);
        return [.. record];
    }

    public static byte[] U16(int value)
    {
        byte[] b = new byte[2];
        BinaryPrimitives.WriteUInt16BigEndian(b, (ushort)value);
        return b;
    }

    /// <summary>Offsets and sizes of every length field of a single-record ClientHello (for "lengths that lie" tests).</summary>
    public static List<(int Offset, int Size, string Name)> LengthFields(byte[] hello)
    {
        var fields = new List<(int, int, string)> { (3, 2, "record length"), (6, 3, "handshake length") };
        int end = 5 + ((hello[3] << 8) | hello[4]);
        int p = 9 + 2 + 32;
        fields.Add((p, 1, "session id length"));
        p += 1 + hello[p];
        fields.Add((p, 2, "cipher suites length"));
        p += 2 + ((hello[p] << 8) | hello[p + 1]);
        fields.Add((p, 1, "compression methods length"));
        p += 1 + hello[p];
        if (p >= end)
            return fields;
        fields.Add((p, 2, "extensions length"));
        p += 2;
        while (p + 4 <= end)
        {
            int type = (hello[p] << 8) | hello[p + 1];
            int length = (hello[p + 2] << 8) | hello[p + 3];
            fields.Add((p + 2, 2, $"extension {type} length"));
            int d = p + 4;
            switch (type)
            {
                case 0:
                    fields.Add((d, 2, "server_name list length"));
                    fields.Add((d + 3, 2, "server_name name length"));
                    break;
                case 16:
                    fields.Add((d, 2, "ALPN list length"));
                    for (int q = d + 2; q < d + length; q += 1 + hello[q])
                        fields.Add((q, 1, $"ALPN entry length at {q}"));
                    break;
                case 43:
                    fields.Add((d, 1, "supported_versions length"));
                    break;
                case 10:
                case 13:
                    fields.Add((d, 2, $"extension {type} list length"));
                    break;
                default:
                    break;
            }

            p += 4 + length;
        }

        return fields;
    }
}
