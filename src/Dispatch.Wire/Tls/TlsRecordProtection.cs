using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Dispatch.Wire.Tls;

/// <summary>
/// One direction's record protection of an established TLS session: the AEAD key, the IV and the sequence number.
/// Encrypts plaintext into whole records and decrypts whole records in place. Not thread-safe: one reader or one
/// writer at a time. Allocates nothing per record.
/// </summary>
/// <remarks>
/// <para>TLS 1.3 (RFC 8446 5.2-5.3, 7.1-7.3): key and IV come from the traffic secret through HKDF-Expand-Label; the
/// per-record nonce is the IV XOR the 64-bit sequence number; the real content type travels inside the encryption
/// (TLSInnerPlaintext) and the outer header always says application_data, version 0x0303. <see cref="UpdateKey"/>
/// moves to the next traffic secret ("traffic upd") and restarts the sequence at zero.</para>
/// <para>TLS 1.2 AEAD suites: AES-GCM (RFC 5288: nonce = 4-byte salt || 8-byte explicit part, sent at the start of
/// the record's fragment; the sequence number serves as the explicit part) and ChaCha20-Poly1305 (RFC 7905: nonce =
/// 12-byte IV XOR the sequence number, nothing explicit). Additional data: seq || type || 0x0303 || plaintext length.</para>
/// <para>Sequence numbers never wrap: the last usable one is 2^64-2; at 2^64-1 every operation throws. Callers should
/// watch <see cref="KeyUpdateAdvised"/> (AES-GCM, RFC 8446 5.5) and update the key while they can.</para>
/// </remarks>
public sealed class TlsRecordProtection : IDisposable
{
    /// <summary>The record header: type, legacy version, length.</summary>
    public const int HeaderLength = 5;

    /// <summary>The largest plaintext one record carries (2^14).</summary>
    public const int MaxPlaintext = 1 << 14;

    /// <summary>The largest TLS 1.3 ciphertext (fragment) length a peer may send: 2^14 + 256.</summary>
    public const int MaxCiphertextTls13 = MaxPlaintext + 256;

    /// <summary>The largest TLS 1.2 ciphertext (fragment) length a peer may send: 2^14 + 2048.</summary>
    public const int MaxCiphertextTls12 = MaxPlaintext + 2048;

    /// <summary>The largest whole record any supported version accepts: header and the larger fragment limit.</summary>
    public const int MaxRecord = HeaderLength + MaxCiphertextTls12;

    /// <summary>
    /// Records protected under one AES-GCM key after which <see cref="KeyUpdateAdvised"/> turns true: 2^23, well below
    /// the 2^24.5 full-size records RFC 8446 5.5 allows, so that there is time to send and apply a KeyUpdate.
    /// </summary>
    public const ulong AesGcmAdvisedRecords = 1UL << 23;

    private const int TagLength = 16;
    private const int NonceLength = 12;
    private const ushort LegacyVersion = 0x0303;

    private AesGcm? _aes;
    private ChaCha20Poly1305? _chacha;
    private readonly byte[] _iv = new byte[NonceLength];
    private readonly byte[] _secret;
    private readonly HashAlgorithmName _hash;
    private bool _disposed;

    private TlsRecordProtection(ushort version, ushort suite, HashAlgorithmName hash, ReadOnlySpan<byte> key, ReadOnlySpan<byte> iv, ReadOnlySpan<byte> secret, ulong sequence)
    {
        Version = version;
        CipherSuite = suite;
        _hash = hash;
        IsChaCha = suite is 0x1303 or 0xCCA8 or 0xCCA9;
        if (IsChaCha)
            _chacha = new ChaCha20Poly1305(key);
        else
            _aes = new AesGcm(key, TagLength);
        iv.CopyTo(_iv);
        _secret = secret.ToArray();
        SequenceNumber = sequence;
    }

    /// <summary>0x0304 (TLS 1.3) or 0x0303 (TLS 1.2).</summary>
    public ushort Version { get; }

    /// <summary>The cipher suite's code point.</summary>
    public ushort CipherSuite { get; }

    /// <summary>The sequence number of the next record this direction protects or opens.</summary>
    public ulong SequenceNumber { get; private set; }

    /// <summary>Records encrypted or decrypted under the current key (reset by <see cref="UpdateKey"/>).</summary>
    public ulong RecordsUnderKey { get; private set; }

    /// <summary>
    /// True once an AES-GCM key has protected <see cref="AesGcmAdvisedRecords"/> records (TLS 1.3: time for a
    /// KeyUpdate), or when the sequence number comes near its end (any suite).
    /// </summary>
    public bool KeyUpdateAdvised => (!IsChaCha && RecordsUnderKey >= AesGcmAdvisedRecords) || SequenceNumber >= ulong.MaxValue - (1UL << 20);

    /// <summary>Whether the suite is ChaCha20-Poly1305 (else AES-GCM).</summary>
    public bool IsChaCha { get; }

    /// <summary>Bytes between the header and the plaintext in a record: 8 for TLS 1.2 AES-GCM (explicit nonce), else 0.</summary>
    public int ExplicitNonceLength => Version == TlsSessionState.Tls12 && !IsChaCha ? 8 : 0;

    /// <summary>Where the plaintext starts in a record this direction writes or reads.</summary>
    public int PayloadOffset => HeaderLength + ExplicitNonceLength;

    /// <summary>Bytes a record adds to its plaintext: header, explicit nonce, TLS 1.3 inner content type, tag.</summary>
    public int Overhead => PayloadOffset + (Version == TlsSessionState.Tls13 ? 1 : 0) + TagLength;

    /// <summary>The size of the record that carries <paramref name="plaintextLength"/> bytes.</summary>
    public int RecordLength(int plaintextLength) => plaintextLength + Overhead;

    /// <summary>The read direction of a handed session: the client's records.</summary>
    public static TlsRecordProtection ForReading(TlsSessionState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        return Create(state.Version, state.CipherSuite, state.ClientSecret, state.ClientIv, state.ReadSequence);
    }

    /// <summary>The write direction of a handed session: the server's records.</summary>
    public static TlsRecordProtection ForWriting(TlsSessionState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        return Create(state.Version, state.CipherSuite, state.ServerSecret, state.ServerIv, state.WriteSequence);
    }

    /// <summary>Either version: TLS 1.3 takes (secret, empty IV), TLS 1.2 (key, IV).</summary>
    public static TlsRecordProtection Create(ushort version, ushort suite, ReadOnlySpan<byte> secretOrKey, ReadOnlySpan<byte> iv, ulong sequence) => version switch
    {
        TlsSessionState.Tls13 => CreateTls13(suite, secretOrKey, sequence),
        TlsSessionState.Tls12 => CreateTls12(suite, secretOrKey, iv, sequence),
        _ => throw new ArgumentException($"unsupported TLS version 0x{version:X4}", nameof(version)),
    };

    /// <summary>TLS 1.3 from a traffic secret (client_ or server_application_traffic_secret_N).</summary>
    /// <exception cref="ArgumentException">An unknown suite, or a secret of the wrong length.</exception>
    public static TlsRecordProtection CreateTls13(ushort suite, ReadOnlySpan<byte> trafficSecret, ulong sequence)
    {
        var (hash, hashLength, keyLength) = Tls13Suite(suite);
        if (trafficSecret.Length != hashLength)
            throw new ArgumentException($"a traffic secret of suite 0x{suite:X4} has {hashLength} bytes, not {trafficSecret.Length}", nameof(trafficSecret));
        Span<byte> key = stackalloc byte[keyLength];
        Span<byte> iv = stackalloc byte[NonceLength];
        try
        {
            DeriveTls13KeyAndIv(suite, trafficSecret, key, iv);
            return new TlsRecordProtection(TlsSessionState.Tls13, suite, hash, key, iv, trafficSecret, sequence);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
            CryptographicOperations.ZeroMemory(iv);
        }
    }

    /// <summary>TLS 1.2 from a write key and write IV (4 bytes of salt for AES-GCM, 12 for ChaCha20-Poly1305).</summary>
    /// <exception cref="ArgumentException">An unknown suite, or a key or IV of the wrong length.</exception>
    public static TlsRecordProtection CreateTls12(ushort suite, ReadOnlySpan<byte> key, ReadOnlySpan<byte> iv, ulong sequence)
    {
        var (keyLength, ivLength) = suite switch
        {
            0xC02B or 0xC02F => (16, 4),
            0xC02C or 0xC030 => (32, 4),
            0xCCA8 or 0xCCA9 => (32, 12),
            _ => throw new ArgumentException($"unsupported TLS 1.2 cipher suite 0x{suite:X4}", nameof(suite)),
        };
        if (key.Length != keyLength || iv.Length != ivLength)
            throw new ArgumentException($"suite 0x{suite:X4} takes a {keyLength}-byte key and a {ivLength}-byte IV, not {key.Length} and {iv.Length}", nameof(key));
        return new TlsRecordProtection(TlsSessionState.Tls12, suite, default, key, iv, [], sequence);
    }

    /// <summary>Whether this code protects records of (version, suite).</summary>
    public static bool IsSupported(ushort version, ushort suite) => version switch
    {
        TlsSessionState.Tls13 => suite is 0x1301 or 0x1302 or 0x1303,
        TlsSessionState.Tls12 => suite is 0xC02B or 0xC02C or 0xC02F or 0xC030 or 0xCCA8 or 0xCCA9,
        _ => false,
    };

    /// <summary>HKDF-Expand-Label(secret, label, context, output.Length) of RFC 8446 7.1 (the "tls13 " prefix added here).</summary>
    public static void HkdfExpandLabel(HashAlgorithmName hash, ReadOnlySpan<byte> secret, string label, ReadOnlySpan<byte> context, Span<byte> output)
    {
        ArgumentNullException.ThrowIfNull(label);
        const string Prefix = "tls13 ";
        var labelLength = Prefix.Length + label.Length;
        if (labelLength > 255 || context.Length > 255 || output.Length > ushort.MaxValue)
            throw new ArgumentException("label, context or output too long for HKDF-Expand-Label");
        Span<byte> info = stackalloc byte[2 + 1 + labelLength + 1 + context.Length];
        BinaryPrimitives.WriteUInt16BigEndian(info, (ushort)output.Length);
        info[2] = (byte)labelLength;
        var at = 3;
        foreach (var c in Prefix)
            info[at++] = (byte)c;
        foreach (var c in label)
            info[at++] = checked((byte)c);
        info[at++] = (byte)context.Length;
        context.CopyTo(info[at..]);
        HKDF.Expand(hash, secret, output, info);
    }

    /// <summary>The TLS 1.3 write key and IV of a traffic secret (RFC 8446 7.3): "key" and "iv" labels, empty context.</summary>
    public static void DeriveTls13KeyAndIv(ushort suite, ReadOnlySpan<byte> trafficSecret, Span<byte> key, Span<byte> iv)
    {
        var (hash, _, keyLength) = Tls13Suite(suite);
        HkdfExpandLabel(hash, trafficSecret, "key", [], key[..keyLength]);
        HkdfExpandLabel(hash, trafficSecret, "iv", [], iv[..NonceLength]);
    }

    /// <summary>The key length of a TLS 1.3 suite (16 or 32).</summary>
    public static int Tls13KeyLength(ushort suite) => Tls13Suite(suite).KeyLength;

    /// <summary>The traffic secret (and hash) length of a TLS 1.3 suite (32 or 48).</summary>
    public static int Tls13SecretLength(ushort suite) => Tls13Suite(suite).HashLength;

    private static (HashAlgorithmName Hash, int HashLength, int KeyLength) Tls13Suite(ushort suite) => suite switch
    {
        0x1301 => (HashAlgorithmName.SHA256, 32, 16),
        0x1302 => (HashAlgorithmName.SHA384, 48, 32),
        0x1303 => (HashAlgorithmName.SHA256, 32, 32),
        _ => throw new ArgumentException($"unsupported TLS 1.3 cipher suite 0x{suite:X4}", nameof(suite)),
    };

    /// <summary>
    /// Protects <paramref name="plaintext"/> (at most <see cref="MaxPlaintext"/> bytes) as one record of
    /// <paramref name="type"/>, written whole (header included) at the start of <paramref name="record"/>; returns its
    /// length (<see cref="RecordLength"/>). The plaintext may already sit at <c>record[PayloadOffset..]</c> (no copy),
    /// or anywhere else.
    /// </summary>
    /// <exception cref="InvalidOperationException">The sequence number is exhausted.</exception>
    public int Encrypt(TlsContentType type, ReadOnlySpan<byte> plaintext, Span<byte> record)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckRoom(plaintext.Length, record);
        plaintext.CopyTo(record.Slice(PayloadOffset, plaintext.Length));
        return Seal(type, record.Slice(PayloadOffset, plaintext.Length + (Version == TlsSessionState.Tls13 ? 1 : 0)), record);
    }

    /// <summary>
    /// Encrypts the first <paramref name="length"/> bytes of <paramref name="source"/> into one whole record at the start
    /// of <paramref name="record"/>, as <see cref="Encrypt"/> does, but without copying them into the record first: the
    /// cipher reads them where they are. TLS 1.3 seals the content type after the plaintext, so there
    /// <paramref name="source"/> holds one byte more, which is borrowed for it and put back before this returns.
    /// </summary>
    /// <returns>The record's length.</returns>
    /// <exception cref="ArgumentException">Too much plaintext, too little room, or a source that overlaps the record.</exception>
    public int EncryptFrom(TlsContentType type, Span<byte> source, int length, Span<byte> record)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckRoom(length, record);
        var tls13 = Version == TlsSessionState.Tls13;
        var plaintext = source[..(length + (tls13 ? 1 : 0))];
        if (plaintext.Overlaps(record))
            throw new ArgumentException("the plaintext to seal from must not overlap the record", nameof(source));
        if (!tls13)
            return Seal(type, plaintext, record);
        var borrowed = plaintext[length];
        try
        {
            return Seal(type, plaintext, record);
        }
        finally
        {
            plaintext[length] = borrowed;
        }
    }

    private void CheckRoom(int plaintextLength, Span<byte> record)
    {
        if (plaintextLength > MaxPlaintext)
            throw new ArgumentException($"a record carries at most {MaxPlaintext} bytes, not {plaintextLength}", nameof(plaintextLength));
        var length = RecordLength(plaintextLength);
        if (record.Length < length)
            throw new ArgumentException($"a record of {plaintextLength} bytes needs {length} bytes of room, not {record.Length}", nameof(record));
    }

    // Seals the plaintext (TLS 1.3: followed by one byte of room, where the inner content type is written) into the
    // record: in place when it is the record's payload (Encrypt), else from where it is (EncryptFrom).
    private int Seal(TlsContentType type, Span<byte> plaintext, Span<byte> record)
    {
        var tls13 = Version == TlsSessionState.Tls13;
        var plaintextLength = plaintext.Length - (tls13 ? 1 : 0);
        var length = RecordLength(plaintextLength);
        var sequence = NextSequence();
        var payloadOffset = PayloadOffset;
        Span<byte> nonce = stackalloc byte[NonceLength];
        record[0] = tls13 ? (byte)TlsContentType.ApplicationData : (byte)type;
        BinaryPrimitives.WriteUInt16BigEndian(record[1..], LegacyVersion);
        BinaryPrimitives.WriteUInt16BigEndian(record[3..], (ushort)(length - HeaderLength));
        if (tls13)
        {
            plaintext[plaintextLength] = (byte)type;
            XorNonce(sequence, nonce);
            Seal(nonce, plaintext, record.Slice(payloadOffset, plaintextLength + 1), record.Slice(payloadOffset + plaintextLength + 1, TagLength), record[..HeaderLength]);
        }
        else
        {
            Span<byte> aad = stackalloc byte[13];
            WriteTls12Aad(aad, sequence, type, plaintextLength);
            if (IsChaCha)
            {
                XorNonce(sequence, nonce);
            }
            else
            {
                _iv.AsSpan(0, 4).CopyTo(nonce);
                BinaryPrimitives.WriteUInt64BigEndian(nonce[4..], sequence);
                nonce[4..].CopyTo(record[HeaderLength..]);
            }

            Seal(nonce, plaintext, record.Slice(payloadOffset, plaintextLength), record.Slice(payloadOffset + plaintextLength, TagLength), aad);
        }

        SequenceNumber = sequence + 1;
        RecordsUnderKey++;
        return length;
    }

    /// <summary>
    /// Opens one whole record (header included, exactly its length) in place; returns the real content type and sets
    /// <paramref name="plaintext"/> to where the plaintext now lies within <paramref name="record"/>.
    /// </summary>
    /// <exception cref="TlsAlertException">
    /// record_overflow (fragment or plaintext too long), bad_record_mac (authentication failed, or a fragment too short
    /// to hold a tag), unexpected_message (TLS 1.3: an outer type other than application_data, or an all-zero inner
    /// plaintext), decode_error (a header that disagrees with the record's length).
    /// </exception>
    /// <exception cref="InvalidOperationException">The sequence number is exhausted.</exception>
    public TlsContentType Decrypt(Span<byte> record, out Range plaintext)
    {
        var payloadOffset = PayloadOffset;
        var destination = record.Length >= payloadOffset + TagLength ? record[payloadOffset..^TagLength] : [];
        var type = Decrypt(record, destination, out var length);
        plaintext = new Range(payloadOffset, payloadOffset + length);
        return type;
    }

    /// <summary>
    /// Opens one whole record (header included, exactly its length) into <paramref name="destination"/>, which needs
    /// <see cref="DecryptedLength"/>(record length) bytes and may be the record's own payload (exactly) or
    /// elsewhere; returns the real content type, the plaintext being <c>destination[..plaintextLength]</c>.
    /// </summary>
    /// <exception cref="TlsAlertException">As <see cref="Decrypt(Span{byte}, out Range)"/>.</exception>
    /// <exception cref="InvalidOperationException">The sequence number is exhausted.</exception>
    public TlsContentType Decrypt(ReadOnlySpan<byte> record, Span<byte> destination, out int plaintextLength)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (record.Length < HeaderLength || BinaryPrimitives.ReadUInt16BigEndian(record[3..]) != record.Length - HeaderLength)
            throw new TlsAlertException(TlsAlertDescription.DecodeError, "record length disagrees with its header");
        var fragmentLength = record.Length - HeaderLength;
        var outerType = (TlsContentType)record[0];
        var maxFragment = Version == TlsSessionState.Tls13 ? MaxCiphertextTls13 : MaxCiphertextTls12;
        if (fragmentLength > maxFragment)
            throw new TlsAlertException(TlsAlertDescription.RecordOverflow, $"record of {fragmentLength} bytes exceeds {maxFragment}");
        var minimum = ExplicitNonceLength + TagLength + (Version == TlsSessionState.Tls13 ? 1 : 0);
        if (fragmentLength < minimum)
            throw new TlsAlertException(TlsAlertDescription.BadRecordMac, $"record of {fragmentLength} bytes is shorter than its tag");
        var sequence = NextSequence();
        Span<byte> nonce = stackalloc byte[NonceLength];
        var payloadOffset = PayloadOffset;
        var ciphertext = record[payloadOffset..^TagLength];
        var tag = record[^TagLength..];
        if (destination.Length < ciphertext.Length)
            throw new ArgumentException($"a record of {record.Length} bytes needs {ciphertext.Length} bytes to decrypt into, not {destination.Length}", nameof(destination));
        var payload = destination[..ciphertext.Length];
        TlsContentType type;
        if (Version == TlsSessionState.Tls13)
        {
            if (outerType != TlsContentType.ApplicationData)
                throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, $"protected record of outer type {(byte)outerType}");
            XorNonce(sequence, nonce);
            Open(nonce, ciphertext, tag, payload, record[..HeaderLength]);
            plaintextLength = payload.Length - 1;
            while (plaintextLength >= 0 && payload[plaintextLength] == 0)
                plaintextLength--;
            if (plaintextLength < 0)
                throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, "inner plaintext is all zeros (no content type)");
            type = (TlsContentType)payload[plaintextLength];
        }
        else
        {
            if (outerType is not (TlsContentType.ChangeCipherSpec or TlsContentType.Alert or TlsContentType.Handshake or TlsContentType.ApplicationData))
                throw new TlsAlertException(TlsAlertDescription.UnexpectedMessage, $"record of unknown type {(byte)outerType}");
            Span<byte> aad = stackalloc byte[13];
            WriteTls12Aad(aad, sequence, outerType, ciphertext.Length);
            if (IsChaCha)
            {
                XorNonce(sequence, nonce);
            }
            else
            {
                _iv.AsSpan(0, 4).CopyTo(nonce);
                record.Slice(HeaderLength, 8).CopyTo(nonce[4..]);
            }

            Open(nonce, ciphertext, tag, payload, aad);
            plaintextLength = payload.Length;
            type = outerType;
        }

        if (plaintextLength > MaxPlaintext)
            throw new TlsAlertException(TlsAlertDescription.RecordOverflow, $"plaintext of {plaintextLength} bytes exceeds {MaxPlaintext}");
        SequenceNumber = sequence + 1;
        RecordsUnderKey++;
        return type;
    }

    /// <summary>The room <see cref="Decrypt(ReadOnlySpan{byte}, Span{byte}, out int)"/> needs for a record of <paramref name="recordLength"/> bytes.</summary>
    public int DecryptedLength(int recordLength) => Math.Max(0, recordLength - PayloadOffset - TagLength);

    /// <summary>
    /// TLS 1.3 KeyUpdate (RFC 8446 7.2): the next traffic secret is HKDF-Expand-Label(secret, "traffic upd", "",
    /// Hash.length); new key and IV from it; the sequence number restarts at zero.
    /// </summary>
    /// <exception cref="InvalidOperationException">Not TLS 1.3.</exception>
    public void UpdateKey()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Version != TlsSessionState.Tls13)
            throw new InvalidOperationException("KeyUpdate exists in TLS 1.3 only");
        Span<byte> next = stackalloc byte[_secret.Length];
        Span<byte> key = stackalloc byte[Tls13KeyLength(CipherSuite)];
        try
        {
            HkdfExpandLabel(_hash, _secret, "traffic upd", [], next);
            next.CopyTo(_secret);
            DeriveTls13KeyAndIv(CipherSuite, _secret, key, _iv);
            if (IsChaCha)
            {
                _chacha!.Dispose();
                _chacha = new ChaCha20Poly1305(key);
            }
            else
            {
                _aes!.Dispose();
                _aes = new AesGcm(key, TagLength);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(next);
            CryptographicOperations.ZeroMemory(key);
        }

        SequenceNumber = 0;
        RecordsUnderKey = 0;
    }

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _aes?.Dispose();
        _chacha?.Dispose();
        CryptographicOperations.ZeroMemory(_secret);
        CryptographicOperations.ZeroMemory(_iv);
    }

    private ulong NextSequence()
    {
        if (SequenceNumber == ulong.MaxValue)
            throw new InvalidOperationException("TLS sequence number exhausted (2^64-1); the connection must end");
        return SequenceNumber;
    }

    private void XorNonce(ulong sequence, Span<byte> nonce)
    {
        _iv.AsSpan(0, NonceLength).CopyTo(nonce);
        var tail = nonce[4..];
        BinaryPrimitives.WriteUInt64BigEndian(tail, BinaryPrimitives.ReadUInt64BigEndian(tail) ^ sequence);
    }

    private static void WriteTls12Aad(Span<byte> aad, ulong sequence, TlsContentType type, int length)
    {
        BinaryPrimitives.WriteUInt64BigEndian(aad, sequence);
        aad[8] = (byte)type;
        BinaryPrimitives.WriteUInt16BigEndian(aad[9..], LegacyVersion);
        BinaryPrimitives.WriteUInt16BigEndian(aad[11..], (ushort)length);
    }

    private void Seal(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> plaintext, Span<byte> ciphertext, Span<byte> tag, ReadOnlySpan<byte> aad)
    {
        if (IsChaCha)
            _chacha!.Encrypt(nonce, plaintext, ciphertext, tag, aad);
        else
            _aes!.Encrypt(nonce, plaintext, ciphertext, tag, aad);
    }

    private void Open(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> ciphertext, ReadOnlySpan<byte> tag, Span<byte> plaintext, ReadOnlySpan<byte> aad)
    {
        try
        {
            if (IsChaCha)
                _chacha!.Decrypt(nonce, ciphertext, tag, plaintext, aad);
            else
                _aes!.Decrypt(nonce, ciphertext, tag, plaintext, aad);
        }
        catch (AuthenticationTagMismatchException e)
        {
            throw new TlsAlertException(TlsAlertDescription.BadRecordMac, "record failed authentication", e);
        }
    }
}
