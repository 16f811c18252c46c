using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Dispatch.Wire.Tls;

namespace Dispatch.TlsDispatcher.Tests.Tls;

/// <summary>
/// A minimal TLS record layer written from the RFCs for the tests (RFC 8446 5.2 and 7.3; RFC 5246 6.2.3.3 with
/// RFC 5288 and RFC 7905), independent of the product's: it proves an exported <see cref="TlsSessionState"/> by
/// decrypting the client's next record and encrypting a reply the client accepts.
/// </summary>
internal sealed class TestRecordLayer
{
    private readonly TlsSessionState _state;
    private readonly byte[] _readKey;
    private readonly byte[] _readIv;
    private readonly byte[] _writeKey;
    private readonly byte[] _writeIv;
    private readonly bool _chacha;
    private ulong _readSequence;
    private ulong _writeSequence;

    public TestRecordLayer(TlsSessionState state)
    {
        _state = state;
        _chacha = state.CipherSuite is 0x1303 or 0xCCA8 or 0xCCA9;
        _readSequence = state.ReadSequence;
        _writeSequence = state.WriteSequence;
        if (state.Version == TlsSessionState.Tls13)
        {
            HashAlgorithmName hash = state.CipherSuite == 0x1302 ? HashAlgorithmName.SHA384 : HashAlgorithmName.SHA256;
            int keyLength = state.CipherSuite == 0x1301 ? 16 : 32;
            _readKey = ExpandLabel(hash, state.ClientSecret, "key", keyLength);
            _readIv = ExpandLabel(hash, state.ClientSecret, "iv", 12);
            _writeKey = ExpandLabel(hash, state.ServerSecret, "key", keyLength);
            _writeIv = ExpandLabel(hash, state.ServerSecret, "iv", 12);
        }
        else
        {
            (_readKey, _readIv, _writeKey, _writeIv) = (state.ClientSecret, state.ClientIv, state.ServerSecret, state.ServerIv);
        }
    }

    /// <summary>HKDF-Expand-Label(secret, label, "", length) (RFC 8446 7.1).</summary>
    public static byte[] ExpandLabel(HashAlgorithmName hash, byte[] secret, string label, int length, byte[]? context = null)
    {
        context ??= [];
        byte[] full = Encoding.ASCII.GetBytes("tls13 " + label);
        byte[] info = [(byte)(length >> 8), (byte)length, (byte)full.Length, .. full, (byte)context.Length, .. context];
        return HKDF.Expand(hash, secret, length, info);
    }

    /// <summary>The length of the first complete record in <paramref name="data"/>, or 0 when it is not complete.</summary>
    public static int FirstRecordLength(ReadOnlySpan<byte> data)
        => data.Length >= 5 && data.Length >= 5 + BinaryPrimitives.ReadUInt16BigEndian(data[3..]) ? 5 + BinaryPrimitives.ReadUInt16BigEndian(data[3..]) : 0;

    /// <summary>Decrypts one application-data record from the client: its content type and content.</summary>
    public (byte Type, byte[] Content) Decrypt(ReadOnlySpan<byte> record)
    {
        Assert.Equal(23, record[0]);
        int length = BinaryPrimitives.ReadUInt16BigEndian(record[3..]);
        Assert.Equal(length + 5, record.Length);
        ReadOnlySpan<byte> body = record[5..];
        ulong sequence = _readSequence++;
        if (_state.Version == TlsSessionState.Tls13)
        {
            byte[] inner = new byte[length - 16];
            Open(_readKey, Nonce13(_readIv, sequence), body[..^16], body[^16..], inner, record[..5]);
            int end = inner.Length;
            while (inner[end - 1] == 0)
                end--;
            return (inner[end - 1], inner[..(end - 1)]);
        }

        int explicitLength = _chacha ? 0 : 8;
        byte[] content = new byte[length - explicitLength - 16];
        byte[] nonce = _chacha ? Nonce13(_readIv, sequence) : [.. _readIv, .. body[..8]];
        Open(_readKey, nonce, body[explicitLength..^16], body[^16..], content, Aad12(sequence, 23, content.Length));
        return (23, content);
    }

    /// <summary>Encrypts application data for the client.</summary>
    public byte[] Encrypt(ReadOnlySpan<byte> content)
    {
        ulong sequence = _writeSequence++;
        if (_state.Version == TlsSessionState.Tls13)
        {
            byte[] inner = [.. content, 23];
            byte[] header = [23, 3, 3, (byte)((inner.Length + 16) >> 8), (byte)(inner.Length + 16)];
            byte[] record = new byte[5 + inner.Length + 16];
            header.CopyTo(record, 0);
            Seal(_writeKey, Nonce13(_writeIv, sequence), inner, record.AsSpan(5, inner.Length), record.AsSpan(5 + inner.Length), header);
            return record;
        }

        int explicitLength = _chacha ? 0 : 8;
        int bodyLength = explicitLength + content.Length + 16;
        byte[] output = new byte[5 + bodyLength];
        output[0] = 23;
        output[1] = 3;
        output[2] = 3;
        BinaryPrimitives.WriteUInt16BigEndian(output.AsSpan(3), (ushort)bodyLength);
        byte[] nonce;
        if (_chacha)
        {
            nonce = Nonce13(_writeIv, sequence);
        }
        else
        {
            BinaryPrimitives.WriteUInt64BigEndian(output.AsSpan(5), sequence);
            nonce = [.. _writeIv, .. output.AsSpan(5, 8)];
        }

        Seal(_writeKey, nonce, content, output.AsSpan(5 + explicitLength, content.Length), output.AsSpan(5 + explicitLength + content.Length), Aad12(sequence, 23, content.Length));
        return output;
    }

    private static byte[] Nonce13(byte[] iv, ulong sequence)
    {
        byte[] nonce = (byte[])iv.Clone();
        for (int i = 0; i < 8; i++)
            nonce[4 + i] ^= (byte)(sequence >> (56 - (8 * i)));
        return nonce;
    }

    private static byte[] Aad12(ulong sequence, byte type, int length)
    {
        byte[] aad = new byte[13];
        BinaryPrimitives.WriteUInt64BigEndian(aad, sequence);
        aad[8] = type;
        aad[9] = 3;
        aad[10] = 3;
        BinaryPrimitives.WriteUInt16BigEndian(aad.AsSpan(11), (ushort)length);
        return aad;
    }

    private void Open(byte[] key, byte[] nonce, ReadOnlySpan<byte> ciphertext, ReadOnlySpan<byte> tag, Span<byte> plaintext, ReadOnlySpan<byte> aad)
    {
        if (_chacha)
        {
            using var chacha = new ChaCha20Poly1305(key);
            chacha.Decrypt(nonce, ciphertext, tag, plaintext, aad);
        }
        else
        {
            using var gcm = new AesGcm(key, 16);
            gcm.Decrypt(nonce, ciphertext, tag, plaintext, aad);
        }
    }

    private void Seal(byte[] key, byte[] nonce, ReadOnlySpan<byte> plaintext, Span<byte> ciphertext, Span<byte> tag, ReadOnlySpan<byte> aad)
    {
        if (_chacha)
        {
            using var chacha = new ChaCha20Poly1305(key);
            chacha.Encrypt(nonce, plaintext, ciphertext, tag, aad);
        }
        else
        {
            using var gcm = new AesGcm(key, 16);
            gcm.Encrypt(nonce, plaintext, ciphertext, tag, aad);
        }
    }
}
