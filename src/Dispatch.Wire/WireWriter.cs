using System.Buffers.Binary;
using System.Text;

namespace Dispatch.Wire;

/// <summary>Writes a message into a caller-provided buffer: little-endian integers, length-prefixed strings and blobs.</summary>
public ref struct WireWriter
{
    private readonly Span<byte> _buffer;
    private int _position;

    public WireWriter(Span<byte> buffer)
    {
        _buffer = buffer;
        _position = 0;
    }

    public readonly int Length => _position;

    public void U8(byte value) => Take(1)[0] = value;

    public void Bool(bool value) => U8(value ? (byte)1 : (byte)0);

    public void U16(ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(Take(2), value);

    public void U32(uint value) => BinaryPrimitives.WriteUInt32LittleEndian(Take(4), value);

    public void I32(int value) => BinaryPrimitives.WriteInt32LittleEndian(Take(4), value);

    public void I64(long value) => BinaryPrimitives.WriteInt64LittleEndian(Take(8), value);

    /// <summary>u16 byte length, then UTF-8 bytes.</summary>
    public void String(string value)
    {
        var count = Encoding.UTF8.GetByteCount(value);
        if (count > ushort.MaxValue)
            throw new WireException($"string of {count} bytes exceeds the 65535-byte field limit");
        U16((ushort)count);
        Encoding.UTF8.GetBytes(value, Take(count));
    }

    /// <summary>u8 presence flag, then the string.</summary>
    public void OptionalString(string? value)
    {
        Bool(value is not null);
        if (value is not null)
            String(value);
    }

    /// <summary>u32 byte length, then the bytes.</summary>
    public void Blob(ReadOnlySpan<byte> value)
    {
        U32((uint)value.Length);
        value.CopyTo(Take(value.Length));
    }

    public void StringList(IReadOnlyList<string> values)
    {
        if (values.Count > ushort.MaxValue)
            throw new WireException("list too long");
        U16((ushort)values.Count);
        foreach (var v in values)
            String(v);
    }

    private Span<byte> Take(int count)
    {
        if (_buffer.Length - _position < count)
            throw new WireException($"message does not fit its {_buffer.Length}-byte buffer");
        var span = _buffer.Slice(_position, count);
        _position += count;
        return span;
    }
}
