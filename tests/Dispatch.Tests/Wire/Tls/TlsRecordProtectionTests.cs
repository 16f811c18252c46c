using System.Buffers.Binary;
using System.Security.Cryptography;
using Dispatch.Wire.Tls;

namespace Dispatch.Tests.Wire.Tls;

/// <summary>
/// Record protection against RFC 8448 section 3 ("Simple 1-RTT Handshake", TLS_AES_128_GCM_SHA256): its application
/// traffic secrets, the keys and IVs derived from them, and the records sent under them, byte for byte.
/// </summary>
public class TlsRecordProtectionTests
{
    private static readonly byte[] ClientSecret = Convert.FromHexString("9e40646ce79a7f9dc05af8889bce6552875afa0b06df0087f792ebb7c17504a5");
    private static readonly byte[] ServerSecret = Convert.FromHexString("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643");

    // {server} NewSessionTicket (sequence 0 under the server application keys), then the 50 bytes 00..31 (sequence 1),
    // then close_notify (sequence 2); {client} the 50 bytes (sequence 0), then close_notify (sequence 1).
    private static readonly byte[] ServerTicketRecord = Convert.FromHexString(
        "17030300de3a6b8f90414a97d6959c3487680de5134a2b240e6cffac116e95d41d6af8f6b580dcf3d11d63c758db289a015940252f55713e061dc13e078891a3"
        + "8efbcf5753ad8ef170ad3c7353d16d9da773b9ca7f2b9fa1b6c0d4a3d03f75e09c30ba1e62972ac46f75f7b981be63439b2999ce13064615139891d5e4c5b406"
        + "f16e3fc181a77ca475840025db2f0a77f81b5ab05b94c01346755f69232c86519d86cbeeac87aac347d143f9605d64f650db4d023e70e952ca49fe5137121c74"
        + "bc2697687e248746d6df353005f3bce18696129c8153556b3b6c6779b37bf15985684f");

    private static readonly byte[] ServerTicket = Convert.FromHexString(
        "040000c90000001efad6aac502000000b22c035d829359ee5ff7af4ec900000000262a6494dc486d2c8a34cb33fa90bf1b0070ad3c498883c9367c09a2be785abc"
        + "55cd226097a3a982117283f82a03a143efd3ff5dd36d64e861be7fd61d2827db279cce145077d454a3664d4e6da4d29ee03725a6a4dafcd0fc67d2aea70529513e3d"
        + "a2677fa5906c5b3f7d8f92f228bda40dda721470f9fbf297b5aea617646fac5c03272e970727c621a79141ef5f7de6505e5bfbc388e93343694093934ae4d357"
        + "0008002a000400000400");

    private static readonly byte[] ClientDataRecord = Convert.FromHexString(
        "1703030043a23f7054b62c94d0affafe8228ba55cbefacea42f914aa66bcab3f2b9819a8a5b46b395bd54a9a20441e2b62974e1f5a6292a2977014bd1e3deae63aeebb21694915e4");

    private static readonly byte[] ServerDataRecord = Convert.FromHexString(
        "17030300432e937e11ef4ac740e538ad36005fc4a46932fc3225d05f82aa1b36e30efaf97d90e6dffc602dcb501a59a8fcc49c4bf2e5f0a21c0047c2abf332540dd032e167c2955d");

    private static readonly byte[] ClientAlertRecord = Convert.FromHexString("1703030013c9872760655666b74d7ff1153efd6db6d0b0e3");
    private static readonly byte[] ServerAlertRecord = Convert.FromHexString("1703030013b58fd67166ebf599d24720cfbe7efa7a8864a9");

    private static readonly byte[] Payload = Enumerable.Range(0, 50).Select(i => (byte)i).ToArray();

    [Fact]
    public void Rfc8448_application_keys_and_ivs_are_derived_from_the_traffic_secrets()
    {
        var key = new byte[16];
        var iv = new byte[12];
        TlsRecordProtection.DeriveTls13KeyAndIv(0x1301, ClientSecret, key, iv);
        Assert.Equal("17422dda596ed5d9acd890e3c63f5051", Convert.ToHexStringLower(key));
        Assert.Equal("5b78923dee08579033e523d9", Convert.ToHexStringLower(iv));
        TlsRecordProtection.DeriveTls13KeyAndIv(0x1301, ServerSecret, key, iv);
        Assert.Equal("9f02283b6c9c07efc26bb9f2ac92e356", Convert.ToHexStringLower(key));
        Assert.Equal("cf782b88dd83549aadf1e984", Convert.ToHexStringLower(iv));
    }

    [Fact]
    public void Rfc8448_client_records_decrypt_in_place()
    {
        using var reader = TlsRecordProtection.CreateTls13(0x1301, ClientSecret, 0);
        var record = (byte[])ClientDataRecord.Clone();
        Assert.Equal(TlsContentType.ApplicationData, reader.Decrypt(record, out var plaintext));
        Assert.Equal(Payload, record[plaintext]);
        Assert.Equal(1UL, reader.SequenceNumber);

        record = (byte[])ClientAlertRecord.Clone();
        Assert.Equal(TlsContentType.Alert, reader.Decrypt(record, out plaintext));
        Assert.Equal([1, 0], record[plaintext]);
        Assert.Equal(2UL, reader.SequenceNumber);
        Assert.Equal(2UL, reader.RecordsUnderKey);

        // Into a separate buffer, the record left untouched.
        using var again = TlsRecordProtection.CreateTls13(0x1301, ClientSecret, 0);
        var destination = new byte[again.DecryptedLength(ClientDataRecord.Length)];
        Assert.Equal(Payload.Length + 1, destination.Length);
        Assert.Equal(TlsContentType.ApplicationData, again.Decrypt(ClientDataRecord, destination, out var length));
        Assert.Equal(Payload, destination[..length]);
        Assert.Throws<ArgumentException>(() => again.Decrypt(ClientAlertRecord, new byte[2], out _));
    }

    [Fact]
    public void Rfc8448_server_records_encrypt_byte_for_byte()
    {
        using var writer = TlsRecordProtection.CreateTls13(0x1301, ServerSecret, 0);
        var buffer = new byte[512];
        var length = writer.Encrypt(TlsContentType.Handshake, ServerTicket, buffer);
        Assert.Equal(ServerTicketRecord, buffer[..length]);

        // Plaintext placed at PayloadOffset is encrypted where it lies.
        Payload.CopyTo(buffer, writer.PayloadOffset);
        length = writer.Encrypt(TlsContentType.ApplicationData, buffer.AsSpan(writer.PayloadOffset, Payload.Length), buffer);
        Assert.Equal(ServerDataRecord, buffer[..length]);
        Assert.Equal(writer.RecordLength(Payload.Length), length);

        length = writer.Encrypt(TlsContentType.Alert, [1, 0], buffer);
        Assert.Equal(ServerAlertRecord, buffer[..length]);
        Assert.Equal(3UL, writer.SequenceNumber);
    }

    [Fact]
    public void Rfc8448_server_records_seal_byte_for_byte_from_where_the_plaintext_lies()
    {
        using var writer = TlsRecordProtection.CreateTls13(0x1301, ServerSecret, 0);
        var record = new byte[512];

        // The ticket with one byte of room after it: the byte is borrowed for the content type and put back.
        var source = new byte[ServerTicket.Length + 7];
        ServerTicket.CopyTo(source, 3);
        source[3 + ServerTicket.Length] = 0xA5;
        var before = (byte[])source.Clone();
        var length = writer.EncryptFrom(TlsContentType.Handshake, source.AsSpan(3), ServerTicket.Length, record);
        Assert.Equal(ServerTicketRecord, record[..length]);
        Assert.Equal(before, source);

        // The byte after may be the next record's first: the 50 bytes sealed from the middle of a larger run.
        source = [.. Payload, .. Payload];
        length = writer.EncryptFrom(TlsContentType.ApplicationData, source, Payload.Length, record);
        Assert.Equal(ServerDataRecord, record[..length]);
        Assert.Equal([.. Payload, .. Payload], source);

        // A source inside the record is refused (the cipher would overwrite what it reads), and nothing is used up.
        Assert.Throws<ArgumentException>(() => writer.EncryptFrom(TlsContentType.Alert, record.AsSpan(100), 2, record));
        Assert.Equal(2UL, writer.SequenceNumber);
    }

    [Theory]
    [InlineData(0xC02B, 16)]
    [InlineData(0xCCA8, 32)]
    public void Tls12_records_sealed_from_where_the_plaintext_lies_match_those_copied_first(int suite, int keyLength)
    {
        var key = RandomNumberGenerator.GetBytes(keyLength);
        var iv = RandomNumberGenerator.GetBytes(suite == 0xCCA8 ? 12 : 4);
        using var copying = TlsRecordProtection.CreateTls12((ushort)suite, key, iv, 9);
        using var sealing = TlsRecordProtection.CreateTls12((ushort)suite, key, iv, 9);
        var plaintext = RandomNumberGenerator.GetBytes(TlsRecordProtection.MaxPlaintext);
        var copied = new byte[copying.RecordLength(plaintext.Length)];
        var sealedFrom = new byte[copied.Length];
        for (var i = 0; i < 2; i++)
        {
            var length = copying.Encrypt(TlsContentType.ApplicationData, plaintext, copied);
            Assert.Equal(length, sealing.EncryptFrom(TlsContentType.ApplicationData, plaintext, plaintext.Length, sealedFrom));
            Assert.Equal(copied, sealedFrom);
        }
    }

    [Fact]
    public void Rfc8448_server_records_decrypt_from_a_handed_state()
    {
        var state = new TlsSessionState(TlsSessionState.Tls13, 0x1301, (byte[])ServerSecret.Clone(), (byte[])ServerSecret.Clone(), [], [], 1, 1);
        using var reader = TlsRecordProtection.ForReading(state);
        var record = (byte[])ServerDataRecord.Clone();
        Assert.Equal(TlsContentType.ApplicationData, reader.Decrypt(record, out var plaintext));
        Assert.Equal(Payload, record[plaintext]);
    }

    [Fact]
    public void One_flipped_bit_fails_authentication()
    {
        using var reader = TlsRecordProtection.CreateTls13(0x1301, ClientSecret, 0);
        var record = (byte[])ClientDataRecord.Clone();
        record[20] ^= 0x04;
        var e = Assert.Throws<TlsAlertException>(() => reader.Decrypt(record, out _));
        Assert.Equal(TlsAlertDescription.BadRecordMac, e.Alert);

        // The wrong sequence number is a wrong nonce: the record under sequence 0 does not open as sequence 1.
        using var late = TlsRecordProtection.CreateTls13(0x1301, ClientSecret, 1);
        Assert.Equal(TlsAlertDescription.BadRecordMac, Assert.Throws<TlsAlertException>(() => late.Decrypt((byte[])ClientDataRecord.Clone(), out _)).Alert);
    }

    [Fact]
    public void Oversized_short_and_misframed_records_are_refused()
    {
        using var reader = TlsRecordProtection.CreateTls13(0x1301, ClientSecret, 0);
        var big = new byte[TlsRecordProtection.HeaderLength + TlsRecordProtection.MaxCiphertextTls13 + 1];
        big[0] = 23;
        BinaryPrimitives.WriteUInt16BigEndian(big.AsSpan(3), (ushort)(big.Length - 5));
        Assert.Equal(TlsAlertDescription.RecordOverflow, Assert.Throws<TlsAlertException>(() => reader.Decrypt(big, out _)).Alert);

        var shortRecord = new byte[] { 23, 3, 3, 0, 4, 1, 2, 3, 4 };
        Assert.Equal(TlsAlertDescription.BadRecordMac, Assert.Throws<TlsAlertException>(() => reader.Decrypt(shortRecord, out _)).Alert);

        var misframed = (byte[])ClientDataRecord.Clone();
        Assert.Equal(TlsAlertDescription.DecodeError, Assert.Throws<TlsAlertException>(() => reader.Decrypt(misframed.AsSpan(0, 40), out _)).Alert);

        var outerHandshake = (byte[])ClientDataRecord.Clone();
        outerHandshake[0] = 22;
        Assert.Equal(TlsAlertDescription.UnexpectedMessage, Assert.Throws<TlsAlertException>(() => reader.Decrypt(outerHandshake, out _)).Alert);
        Assert.Equal(0UL, reader.SequenceNumber);
    }

    [Fact]
    public void Tls13_plaintext_longer_than_2_pow_14_is_record_overflow_even_when_authentic()
    {
        // The writer refuses to build one, so seal it by hand: 2^14 + 1 bytes of content, then the content type.
        var secret = RandomNumberGenerator.GetBytes(32);
        var key = new byte[32];
        var iv = new byte[12];
        TlsRecordProtection.DeriveTls13KeyAndIv(0x1303, secret, key, iv);
        var inner = new byte[TlsRecordProtection.MaxPlaintext + 2];
        inner[^1] = 23;
        var record = new byte[5 + inner.Length + 16];
        byte[] header = [23, 3, 3, (byte)((inner.Length + 16) >> 8), (byte)(inner.Length + 16)];
        header.CopyTo(record, 0);
        using (var chacha = new ChaCha20Poly1305(key))
            chacha.Encrypt(iv, inner, record.AsSpan(5, inner.Length), record.AsSpan(5 + inner.Length), header);
        using var reader = TlsRecordProtection.CreateTls13(0x1303, secret, 0);
        Assert.Equal(TlsAlertDescription.RecordOverflow, Assert.Throws<TlsAlertException>(() => reader.Decrypt(record, out _)).Alert);

        using var writer = TlsRecordProtection.CreateTls13(0x1303, secret, 0);
        Assert.Throws<ArgumentException>(() => writer.Encrypt(TlsContentType.ApplicationData, new byte[TlsRecordProtection.MaxPlaintext + 1], new byte[20000]));
    }

    [Fact]
    public void Tls13_padding_is_stripped_and_an_all_zero_inner_plaintext_is_refused()
    {
        using var writer = TlsRecordProtection.CreateTls13(0x1302, new byte[48], 7);
        using var reader = TlsRecordProtection.CreateTls13(0x1302, new byte[48], 7);
        var record = new byte[64];
        // Inner plaintext "a" || 0x17 || 00 00 || (type byte 00): two bytes of padding after the real content type.
        var length = writer.Encrypt(TlsContentType.Invalid, [(byte)'a', 23, 0, 0], record);
        Assert.Equal(TlsContentType.ApplicationData, reader.Decrypt(record.AsSpan(0, length), out var plaintext));
        Assert.Equal("a"u8.ToArray(), record[plaintext]);

        length = writer.Encrypt(TlsContentType.Invalid, [0, 0], record);
        Assert.Equal(TlsAlertDescription.UnexpectedMessage, Assert.Throws<TlsAlertException>(() => reader.Decrypt(record.AsSpan(0, length), out _)).Alert);
    }

    [Theory]
    [InlineData(0x1301)]
    [InlineData(0x1302)]
    [InlineData(0x1303)]
    public void KeyUpdate_follows_the_traffic_upd_label_and_restarts_the_sequence(int suite)
    {
        var secretLength = TlsRecordProtection.Tls13SecretLength((ushort)suite);
        var secret = RandomNumberGenerator.GetBytes(secretLength);
        using var writer = TlsRecordProtection.CreateTls13((ushort)suite, secret, 5);
        using var reader = TlsRecordProtection.CreateTls13((ushort)suite, secret, 5);
        writer.UpdateKey();
        Assert.Equal(0UL, writer.SequenceNumber);
        var record = new byte[64];
        var length = writer.Encrypt(TlsContentType.ApplicationData, "hi"u8, record);
        // The old key does not open it.
        Assert.Throws<TlsAlertException>(() => reader.Decrypt((byte[])record[..length].Clone(), out _));

        // Independently: HKDF-Expand (one HMAC block suffices for 32 or 48 bytes) of the HkdfLabel
        // { length, "tls13 traffic upd", "" }, then the next key and IV, then AEAD by hand.
        var hash = suite == 0x1302 ? HashAlgorithmName.SHA384 : HashAlgorithmName.SHA256;
        var label = "tls13 traffic upd"u8.ToArray();
        byte[] info = [(byte)(secretLength >> 8), (byte)secretLength, (byte)label.Length, .. label, 0, 1];
        var next = (hash == HashAlgorithmName.SHA384 ? HMACSHA384.HashData(secret, info) : HMACSHA256.HashData(secret, info))[..secretLength];
        using var updated = TlsRecordProtection.CreateTls13((ushort)suite, next, 0);
        var copy = record[..length];
        Assert.Equal(TlsContentType.ApplicationData, updated.Decrypt(copy, out var plaintext));
        Assert.Equal("hi"u8.ToArray(), copy[plaintext]);

        reader.UpdateKey();
        Assert.Equal(TlsContentType.ApplicationData, reader.Decrypt(record.AsSpan(0, length), out plaintext));
        Assert.Equal("hi"u8.ToArray(), record[plaintext]);
    }

    [Fact]
    public void The_sequence_number_never_wraps()
    {
        using var writer = TlsRecordProtection.CreateTls13(0x1301, ServerSecret, ulong.MaxValue - 1);
        var record = new byte[64];
        writer.Encrypt(TlsContentType.ApplicationData, "x"u8, record);
        Assert.True(writer.KeyUpdateAdvised);
        Assert.Throws<InvalidOperationException>(() => writer.Encrypt(TlsContentType.ApplicationData, "x"u8, record));
        using var reader = TlsRecordProtection.CreateTls13(0x1301, ServerSecret, ulong.MaxValue);
        Assert.Throws<InvalidOperationException>(() => reader.Decrypt((byte[])ServerDataRecord.Clone(), out _));
        using var fresh = TlsRecordProtection.CreateTls13(0x1301, ServerSecret, 0);
        Assert.False(fresh.KeyUpdateAdvised);
    }

    [Theory]
    [InlineData(0xC02B, 16)]
    [InlineData(0xC030, 32)]
    public void Tls12_aes_gcm_records_carry_the_explicit_nonce_and_match_rfc5288(int suite, int keyLength)
    {
        var key = RandomNumberGenerator.GetBytes(keyLength);
        var salt = RandomNumberGenerator.GetBytes(4);
        const ulong Sequence = 0x0102030405060708;
        using var writer = TlsRecordProtection.CreateTls12((ushort)suite, key, salt, Sequence);
        var record = new byte[128];
        var length = writer.Encrypt(TlsContentType.ApplicationData, Payload, record);
        Assert.Equal(5 + 8 + Payload.Length + 16, length);
        Assert.Equal([23, 3, 3, 0, (byte)(8 + Payload.Length + 16)], record[..5]);
        Assert.Equal(BitConverter.GetBytes(Sequence).Reverse(), record[5..13]);

        // By hand: nonce = salt || explicit; additional data = seq || type || version || plaintext length.
        using var aes = new AesGcm(key, 16);
        var plaintext = new byte[Payload.Length];
        byte[] nonce = [.. salt, .. record[5..13]];
        byte[] aad = [.. record[5..13], 23, 3, 3, 0, (byte)Payload.Length];
        aes.Decrypt(nonce, record.AsSpan(13, Payload.Length), record.AsSpan(13 + Payload.Length, 16), plaintext, aad);
        Assert.Equal(Payload, plaintext);

        using var reader = TlsRecordProtection.CreateTls12((ushort)suite, key, salt, Sequence);
        Assert.Equal(TlsContentType.ApplicationData, reader.Decrypt(record.AsSpan(0, length), out var range));
        Assert.Equal(Payload, record[range]);
        Assert.Throws<InvalidOperationException>(reader.UpdateKey);
    }

    [Theory]
    [InlineData(0xCCA8)]
    [InlineData(0xCCA9)]
    public void Tls12_chacha20_poly1305_records_match_rfc7905(int suite)
    {
        var key = RandomNumberGenerator.GetBytes(32);
        var iv = RandomNumberGenerator.GetBytes(12);
        using var writer = TlsRecordProtection.CreateTls12((ushort)suite, key, iv, 3);
        var record = new byte[128];
        var length = writer.Encrypt(TlsContentType.Alert, [2, 40], record);
        Assert.Equal(5 + 2 + 16, length);
        Assert.Equal(21, record[0]);

        // By hand: nonce = iv XOR (0^32 || seq); additional data = seq || type || version || plaintext length.
        var nonce = (byte[])iv.Clone();
        nonce[11] ^= 3;
        using var chacha = new ChaCha20Poly1305(key);
        var plaintext = new byte[2];
        chacha.Decrypt(nonce, record.AsSpan(5, 2), record.AsSpan(7, 16), plaintext, [0, 0, 0, 0, 0, 0, 0, 3, 21, 3, 3, 0, 2]);
        Assert.Equal([2, 40], plaintext);

        using var reader = TlsRecordProtection.CreateTls12((ushort)suite, key, iv, 3);
        Assert.Equal(TlsContentType.Alert, reader.Decrypt(record.AsSpan(0, length), out var range));
        Assert.Equal([2, 40], record[range]);
    }

    [Fact]
    public void Unknown_suites_and_wrong_lengths_are_refused()
    {
        Assert.Throws<ArgumentException>(() => TlsRecordProtection.CreateTls13(0x1304, new byte[32], 0));
        Assert.Throws<ArgumentException>(() => TlsRecordProtection.CreateTls13(0x1302, new byte[32], 0));
        Assert.Throws<ArgumentException>(() => TlsRecordProtection.CreateTls12(0x009C, new byte[16], new byte[4], 0));
        Assert.Throws<ArgumentException>(() => TlsRecordProtection.CreateTls12(0xC02F, new byte[16], new byte[12], 0));
        Assert.True(TlsRecordProtection.IsSupported(TlsSessionState.Tls12, 0xCCA9));
        Assert.False(TlsRecordProtection.IsSupported(TlsSessionState.Tls13, 0xC02B));
    }
}
