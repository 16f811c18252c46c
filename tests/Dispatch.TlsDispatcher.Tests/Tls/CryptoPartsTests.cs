using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Dispatch.TlsDispatcher.Tls;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Modes;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Crypto.Tls;
using ChaCha20Poly1305 = System.Security.Cryptography.ChaCha20Poly1305;
using HashAlgorithm = Org.BouncyCastle.Crypto.Tls.HashAlgorithm;

namespace Dispatch.TlsDispatcher.Tests.Tls;

/// <summary>The .NET-backed pieces plugged into BouncyCastle: record ciphers, signer credentials, ECDHE.</summary>
public sealed class CryptoPartsTests
{
    private static (DotNetAeadCipher Server, DotNetAeadCipher Client, byte[] ServerKey, byte[] ServerIv) Pair(AeadKind kind, int keyLength)
    {
        int ivLength = kind == AeadKind.AesGcm ? 4 : 12;
        byte[] serverKey = RandomNumberGenerator.GetBytes(keyLength);
        byte[] clientKey = RandomNumberGenerator.GetBytes(keyLength);
        byte[] serverIv = RandomNumberGenerator.GetBytes(ivLength);
        byte[] clientIv = RandomNumberGenerator.GetBytes(ivLength);
        return (
            new DotNetAeadCipher(kind, serverKey, serverIv, clientKey, clientIv, 0x0303),
            new DotNetAeadCipher(kind, clientKey, clientIv, serverKey, serverIv, 0x0303),
            serverKey,
            serverIv);
    }

    [Theory]
    [InlineData(AeadKind.AesGcm, 16)]
    [InlineData(AeadKind.AesGcm, 32)]
    [InlineData(AeadKind.ChaCha20Poly1305, 32)]
    public void Records_round_trip_and_tampering_is_bad_record_mac(AeadKind kind, int keyLength)
    {
        (DotNetAeadCipher server, DotNetAeadCipher client, _, _) = Pair(kind, keyLength);
        using (server)
        using (client)
        {
            int overhead = kind == AeadKind.AesGcm ? 24 : 16;
            Assert.Equal(16384, server.GetPlaintextLimit(16384 + overhead));
            foreach (int length in new[] { 0, 1, 100, 16384 })
            {
                byte[] plaintext = RandomNumberGenerator.GetBytes(length);
                byte[] padded = [9, 9, .. plaintext, 9];
                byte[] record = server.EncodePlaintext(length, ContentType.application_data, padded, 2, length);
                Assert.Equal(length + overhead, record.Length);
                byte[] framed = [7, .. record, 7];
                Assert.Equal(plaintext, client.DecodeCiphertext(length, ContentType.application_data, framed, 1, record.Length));

                byte[] tampered = (byte[])record.Clone();
                tampered[^1] ^= 1;
                Assert.Equal(AlertDescription.bad_record_mac, Assert.Throws<TlsFatalAlert>(() => client.DecodeCiphertext(length, ContentType.application_data, tampered, 0, tampered.Length)).AlertDescription);

                // Wrong sequence number or content type: the additional data differs.
                Assert.Throws<TlsFatalAlert>(() => client.DecodeCiphertext(length + 1, ContentType.application_data, record, 0, record.Length));
                Assert.Throws<TlsFatalAlert>(() => client.DecodeCiphertext(length, ContentType.alert, record, 0, record.Length));
            }

            Assert.Equal(AlertDescription.decode_error, Assert.Throws<TlsFatalAlert>(() => client.DecodeCiphertext(0, 23, new byte[overhead - 1], 0, overhead - 1)).AlertDescription);
        }
    }

    [Fact]
    public void Gcm_layout_matches_rfc5288_checked_with_bouncycastle_gcm()
    {
        (DotNetAeadCipher server, DotNetAeadCipher client, byte[] key, byte[] salt) = Pair(AeadKind.AesGcm, 16);
        using (server)
        using (client)
        {
            const long Seq = 0x0102030405060708;
            byte[] plaintext = RandomNumberGenerator.GetBytes(1000);
            byte[] record = server.EncodePlaintext(Seq, 23, plaintext, 0, plaintext.Length);

            // explicit nonce = our sequence number
            Assert.Equal(Seq, BinaryPrimitives.ReadInt64BigEndian(record));

            byte[] nonce = [.. salt, .. record.AsSpan(0, 8)];
            byte[] aad = new byte[13];
            BinaryPrimitives.WriteInt64BigEndian(aad, Seq);
            aad[8] = 23;
            aad[9] = 3;
            aad[10] = 3;
            BinaryPrimitives.WriteUInt16BigEndian(aad.AsSpan(11), (ushort)plaintext.Length);
            var gcm = new GcmBlockCipher(new AesEngine());
            gcm.Init(false, new AeadParameters(new KeyParameter(key), 128, nonce, aad));
            byte[] output = new byte[gcm.GetOutputSize(record.Length - 8)];
            int n = gcm.ProcessBytes(record, 8, record.Length - 8, output, 0);
            n += gcm.DoFinal(output, n);
            Assert.Equal(plaintext, output.AsSpan(0, n).ToArray());
        }
    }

    [Fact]
    public void Chacha_nonce_is_iv_xor_sequence_number_rfc7905()
    {
        byte[] key = RandomNumberGenerator.GetBytes(32);
        byte[] iv = RandomNumberGenerator.GetBytes(12);
        using var cipher = new DotNetAeadCipher(AeadKind.ChaCha20Poly1305, key, iv, key, iv, 0x0303);
        const long Seq = 0x1122334455667788;
        byte[] record = cipher.EncodePlaintext(Seq, 23, [1, 2, 3], 0, 3);
        Assert.Equal(3 + 16, record.Length); // no explicit nonce

        byte[] nonce = (byte[])iv.Clone();
        for (int i = 0; i < 8; i++)
            nonce[4 + i] ^= (byte)(Seq >> (56 - (8 * i)));
        byte[] aad = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 23, 3, 3, 0, 3];
        using var chacha = new ChaCha20Poly1305(key);
        byte[] plain = new byte[3];
        chacha.Decrypt(nonce, record.AsSpan(0, 3), record.AsSpan(3), plain, aad);
        Assert.Equal([1, 2, 3], plain);
    }

    [Fact]
    public void Post_handshake_handshake_bytes_are_capped()
    {
        (DotNetAeadCipher server, DotNetAeadCipher client, _, _) = Pair(AeadKind.AesGcm, 16);
        using (server)
        using (client)
        {
            byte[] chunk = new byte[16384];
            long seq = 0;
            var e = Assert.Throws<TlsFatalAlert>(void () =>
            {
                while (true)
                {
                    byte[] record = server.EncodePlaintext(seq, ContentType.handshake, chunk, 0, chunk.Length);
                    client.DecodeCiphertext(seq++, ContentType.handshake, record, 0, record.Length);
                }
            });
            Assert.Equal(AlertDescription.unexpected_message, e.AlertDescription);
            Assert.Equal((DotNetAeadCipher.MaxEncryptedHandshakeBytes / chunk.Length) + 1, seq); // the cap is reached exactly, the next record fails

            // Application data is not counted.
            for (int i = 0; i < 10; i++)
            {
                byte[] record = server.EncodePlaintext(seq, ContentType.application_data, chunk, 0, chunk.Length);
                client.DecodeCiphertext(seq++, ContentType.application_data, record, 0, record.Length);
            }
        }
    }

    [Fact]
    public void Ecdsa_signatures_are_der_and_verify()
    {
        var credentials = new DotNetSignerCredentials(TestPki.Shared.Ecdsa, new SignatureAndHashAlgorithm(HashAlgorithm.sha256, SignatureAlgorithm.ecdsa));
        byte[] hash = SHA256.HashData("data"u8);
        byte[] signature = credentials.GenerateCertificateSignature(hash);
        Assert.Equal(0x30, signature[0]); // ASN.1 SEQUENCE, not P1363 r||s
        Assert.Equal(signature.Length - 2, signature[1]);
        using ECDsa publicKey = TestPki.Shared.Ecdsa.Leaf.GetECDsaPublicKey()!;
        Assert.True(publicKey.VerifyHash(hash, signature, DSASignatureFormat.Rfc3279DerSequence));
        Assert.Throws<TlsFatalAlert>(() => credentials.GenerateCertificateSignature(new byte[20]));
    }

    [Fact]
    public void Rsa_signatures_are_pkcs1_and_verify()
    {
        var credentials = new DotNetSignerCredentials(TestPki.Shared.Rsa, new SignatureAndHashAlgorithm(HashAlgorithm.sha384, SignatureAlgorithm.rsa));
        byte[] hash = SHA384.HashData("data"u8);
        byte[] signature = credentials.GenerateCertificateSignature(hash);
        using RSA publicKey = TestPki.Shared.Rsa.Leaf.GetRSAPublicKey()!;
        Assert.True(publicKey.VerifyHash(hash, signature, HashAlgorithmName.SHA384, RSASignaturePadding.Pkcs1));
    }

    [Fact]
    public void Signer_refuses_unsuitable_algorithms()
    {
        Assert.Throws<ArgumentException>(() => new DotNetSignerCredentials(TestPki.Shared.Rsa, new SignatureAndHashAlgorithm(HashAlgorithm.sha256, SignatureAlgorithm.ecdsa)));
        Assert.Throws<ArgumentException>(() => new DotNetSignerCredentials(TestPki.Shared.Ecdsa, new SignatureAndHashAlgorithm(HashAlgorithm.sha1, SignatureAlgorithm.ecdsa)));
        Assert.Throws<ArgumentException>(() => new DotNetSignerCredentials(TestPki.Shared.Rsa, new SignatureAndHashAlgorithm(8, 4)));
    }

    [Fact]
    public void Concurrent_signing_is_safe()
    {
        byte[] hash = SHA256.HashData("x"u8);
        using ECDsa publicKey = TestPki.Shared.Ecdsa.Leaf.GetECDsaPublicKey()!;
        Parallel.For(0, 400, _ =>
        {
            var credentials = new DotNetSignerCredentials(TestPki.Shared.Ecdsa, new SignatureAndHashAlgorithm(HashAlgorithm.sha256, SignatureAlgorithm.ecdsa));
            Assert.True(publicKey.VerifyHash(hash, credentials.GenerateCertificateSignature(hash), DSASignatureFormat.Rfc3279DerSequence));
        });
    }

    [Theory]
    [InlineData("not on the curve")]
    [InlineData("wrong length")]
    [InlineData("compressed")]
    [InlineData("truncated")]
    [InlineData("trailing")]
    public void Client_key_exchange_points_are_validated(string kind)
    {
        using var exchange = new DotNetEcdheKeyExchange(KeyExchangeAlgorithm.ECDHE_ECDSA);
        using var valid = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        ECParameters p = valid.ExportParameters(false);
        byte[] point = [4, .. p.Q.X!, .. p.Q.Y!];
        byte[] message = kind switch
        {
            "not on the curve" => [65, .. MutateY(point)],
            "wrong length" => [64, .. point[..64]],
            "compressed" => [33, (byte)(2 + (p.Q.Y![31] & 1)), .. p.Q.X!],
            "truncated" => [65, .. point[..40]],
            _ => [65, .. point, 0],
        };
        var e = Assert.Throws<TlsFatalAlert>(() => exchange.ProcessClientKeyExchange(new MemoryStream(message)));
        Assert.Contains(e.AlertDescription, new[] { AlertDescription.illegal_parameter, AlertDescription.decode_error });

        static byte[] MutateY(byte[] point)
        {
            byte[] copy = (byte[])point.Clone();
            copy[^1] ^= 1;
            return copy;
        }
    }

    [Fact]
    public void Client_key_exchange_accepts_a_valid_point()
    {
        using var exchange = new DotNetEcdheKeyExchange(KeyExchangeAlgorithm.ECDHE_RSA);
        using var valid = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        ECParameters p = valid.ExportParameters(false);
        exchange.ProcessClientKeyExchange(new MemoryStream([65, 4, .. p.Q.X!, .. p.Q.Y!]));
    }
}
