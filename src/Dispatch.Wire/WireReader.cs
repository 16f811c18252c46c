using System.Buffers.Binary;
using System.Text;

namespace Dispatch.Wire;

/// <summary>
/// Reads a message written by <see cref="WireWriter"/>. Every read checks the remaining length first;
/// every string and blob is checked against its own limit before anything is allocated;
/// <see cref="End"/> rejects trailing bytes.
/// </summary>
public ref struct WireReader
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    private readonly ReadOnlySpan<byte> _data;
    private int _position;

    public WireReader(ReadOnlySpan<byte> data)
    {
        _data = data;
        _position = 0;
    }

    public readonly int Remaining => _data.Length - _position;

    public byte U8() => Take(1, "u8")[0];

    public bool Bool()
    {
        var b = U8();
        return b switch
        {
            0 => false,
            1 => true,
            _ => throw new WireException($"boolean field holds {b} at offset {_position - 1}"),
        };
    }

    public ushort U16() => BinaryPrimitives.ReadUInt16LittleEndian(Take(2, "u16"));

    public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, "u32"));

    public int I32() => BinaryPrimitives.ReadInt32LittleEndian(Take(4, "i32"));

    public long I64() => BinaryPrimitives.ReadInt64LittleEndian(Take(8, "i64"));

    public string String(int maxBytes)
    {
        int length = U16();
        if (length > maxBytes)
            throw new WireException($"string of {length} bytes exceeds its {maxBytes}-byte limit");
        var bytes = Take(length, "string");
        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw new WireException("string is not valid UTF-8");
        }
    }

    public string? OptionalString(int maxBytes) => Bool() ? String(maxBytes) : null;

    public ReadOnlySpan<byte> Blob(int maxBytes)
    {
        var length = U32();
        if (length > (uint)maxBytes)
            throw new WireException($"blob of {length} bytes exceeds its {maxBytes}-byte limit");
        return Take((int)length, "blob");
    }

    public string[] StringList(int maxCount, int maxBytesEach)
    {
        int count = U16();
        if (count > maxCount)
            throw new WireException($"list of {count} entries exceeds its {maxCount}-entry limit");
        var list = new string[count];
        for (var i = 0; i < count; i++)
            list[i] = String(maxBytesEach);
        return list;
    }

    /// <summary>Trailing bytes are an error: the sender and receiver disagree on the layout.</summary>
    public readonly void End()
    {
        if (_position != _data.Length)
            throw new WireException($"{_data.Length - _position} trailing bytes after the message");
    }

    private ReadOnlySpan<byte> Take(int count, string what)
    {
        if (Remaining < count)
            throw new WireException($"truncated: {what} of {count} bytes at offset {_position}, {Remaining} left");
        var span = _data.Slice(_position, count);
        _position += count;
        return span;
    }
}

/// <summary>A message that is malformed, out of bounds or not allowed here. Fatal for the channel.</summary>
public sealed class WireException : Exception
{
    public WireException()
    {
    }

    public WireException(string message) : base(message)
    {
    }

    public WireException(string message, Exception innerException) : base(message, innerException)
    {
    }
}
