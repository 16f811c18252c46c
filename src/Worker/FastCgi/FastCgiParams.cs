using System.Buffers;
using System.Text;

namespace Dispatch.Worker.FastCgi;

/// <summary>
/// Encodes FCGI_PARAMS name-value pairs (the specification, section 3.4): each length in 1 byte when below 128, else
/// in 4 bytes big-endian with the top bit set, then the name and value bytes. Pairs are packed into PARAMS records of at
/// most 65535 bytes (a pair may span records).
/// </summary>
internal sealed class FastCgiParams
{
    /// <summary>Largest total encoded size accepted (far beyond any real request head, which Kestrel bounds anyway).</summary>
    public const int MaxEncodedBytes = 1 << 20;

    private readonly ArrayBufferWriter<byte> _pairs = new(4096);

    public int Count { get; private set; }

    public void Add(string name, string value)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(value);
        var nameLength = Encoding.UTF8.GetByteCount(name);
        var valueLength = Encoding.UTF8.GetByteCount(value);
        if (_pairs.WrittenCount + nameLength + valueLength + 8 > MaxEncodedBytes)
        {
            throw new InvalidOperationException($"FastCGI parameters exceed {MaxEncodedBytes} bytes.");
        }

        WriteLength(nameLength);
        WriteLength(valueLength);
        _pairs.Advance(Encoding.UTF8.GetBytes(name, _pairs.GetSpan(nameLength)));
        _pairs.Advance(Encoding.UTF8.GetBytes(value, _pairs.GetSpan(valueLength)));
        Count++;
    }

    /// <summary>The encoded pairs only (for tests and the record writer).</summary>
    public ReadOnlyMemory<byte> Encoded => _pairs.WrittenMemory;

    /// <summary>Decodes pairs (tests, and the fake servers in them). Throws on a truncated or oversized pair.</summary>
    public static List<KeyValuePair<string, string>> Decode(ReadOnlySpan<byte> data)
    {
        var list = new List<KeyValuePair<string, string>>();
        while (!data.IsEmpty)
        {
            var nameLength = ReadLength(ref data);
            var valueLength = ReadLength(ref data);
            if ((long)nameLength + valueLength > data.Length)
            {
                throw new FormatException("A name-value pair is longer than the data.");
            }

            list.Add(new(Encoding.UTF8.GetString(data[..nameLength]), Encoding.UTF8.GetString(data.Slice(nameLength, valueLength))));
            data = data[(nameLength + valueLength)..];
        }

        return list;
    }

    private static int ReadLength(ref ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
        {
            throw new FormatException("A name-value pair is truncated.");
        }

        if (data[0] < 0x80)
        {
            var one = data[0];
            data = data[1..];
            return one;
        }

        if (data.Length < 4)
        {
            throw new FormatException("A name-value pair is truncated.");
        }

        var length = ((data[0] & 0x7f) << 24) | (data[1] << 16) | (data[2] << 8) | data[3];
        data = data[4..];
        return length;
    }

    private void WriteLength(int length)
    {
        if (length < 0x80)
        {
            _pairs.GetSpan(1)[0] = (byte)length;
            _pairs.Advance(1);
            return;
        }

        var span = _pairs.GetSpan(4);
        span[0] = (byte)((length >> 24) | 0x80);
        span[1] = (byte)(length >> 16);
        span[2] = (byte)(length >> 8);
        span[3] = (byte)length;
        _pairs.Advance(4);
    }
}
