using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Dispatch.TlsDispatcher.Tls;
using Org.BouncyCastle.Crypto.Engines;
using Org.BouncyCastle.Crypto.Modes;
using Org.BouncyCastle.Crypto.Parameters;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;
using ChaCha20Poly1305 = System.Security.Cryptography.ChaCha20Poly1305;
using HashAlgorithm = Org.BouncyCastle.Tls.HashAlgorithm;
using Rfc7748X25519 = Org.BouncyCastle.Math.EC.Rfc7748.X25519;

namespace Dispatch.TlsDispatcher.Tests.Tls;

/// <summary>The .NET-backed pieces plugged into BouncyCastle: AEADs, secrets (HKDF, PRF), signer credentials, ECDH.</summary>
public sealed class CryptoPartsTests
{
    [Theory]
    [InlineData(AeadKind.AesGcm, 16)]
    [InlineData(AeadKind.AesGcm, 32)]
    [InlineData(AeadKind.ChaCha20Poly1305, 32)]
    public void Aead_round_trips_in_place_and_tampering_is_bad_record_mac(AeadKind kind, int keyLength)
    {
        byte[] key = RandomNumberGenerator.GetBytes(keyLength);
        using var encrypt = new DotNetAeadCipherImpl(kind, encrypt: true);
        using var decrypt = new DotNetAeadCipherImpl(kind, encrypt: false);
        encrypt.SetKey(key);
        decrypt.SetKey(key, 0, key.Length);
        foreach (int length in new[] { 0, 1, 100, 16385 })
        {
            byte[] nonce = RandomNumberGenerator.GetBytes(12);
            byte[] aad = RandomNumberGenerator.GetBytes(13);
            byte[] plaintext = RandomNumberGenerator.GetBytes(length);

            // In place, as TlsAeadCipher encrypts: plaintext at the output position, tag after it.
            byte[] record = new byte[3 + length + 16];
            plaintext.CopyTo(record, 3);
            encrypt.Init(nonce, 16, null!);
            Assert.Equal(length + 16, encrypt.GetOutputSize(length));
            Assert.Equal(length + 16, encrypt.DoFinal(aad, record, 3, length, record, 3));

            // Checked with an independent implementation.
            byte[] check = new byte[length];
            if (kind == AeadKind.AesGcm)
            {
                var gcm = new GcmBlockCipher(new AesEngine());
                gcm.Init(false, new AeadParameters(new KeyParameter(key), 128, nonce, aad));
                int n = gcm.ProcessBytes(record, 3, length + 16, check, 0);
                Assert.Equal(length, n + gcm.DoFinal(check, n));
            }
            else
            {
                using var chacha = new ChaCha20Poly1305(key);
                chacha.Decrypt(nonce, record.AsSpan(3, length), record.AsSpan(3 + length, 16), check, aad);
            }

            Assert.Equal(plaintext, check);

            byte[] output = new byte[length];
            decrypt.Init(nonce, 16, null!);
            Assert.Equal(length, decrypt.GetOutputSize(length + 16));
            Assert.Equal(length, decrypt.DoFinal(aad, record, 3, length + 16, output, 0));
            Assert.Equal(plaintext, output);

            record[^1] ^= 1;
            Assert.Equal(AlertDescription.bad_record_mac, Assert.Throws<TlsFatalAlert>(() => decrypt.DoFinal(aad, record, 3, length + 16, output, 0)).AlertDescription);
        }
    }

    [Fact]
    public void Hkdf_matches_rfc8448_early_secret_and_derived()
    {
        var crypto = new DotNetTlsCrypto();
        TlsSecret zeros = crypto.HkdfInit(CryptoHashAlgorithm.sha256);
        var early = (DotNetTlsSecret)zeros.HkdfExtract(CryptoHashAlgorithm.sha256, crypto.HkdfInit(CryptoHashAlgorithm.sha256));
        Assert.Equal(Convert.FromHexString("33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a"), early.Export());
        byte[] emptyHash = SHA256.HashData([]);
        var derived = (DotNetTlsSecret)early.DeriveUsingPrf(PrfAlgorithm.tls13_hkdf_sha256, "derived", emptyHash, 32);
        Assert.Equal(Convert.FromHexString("6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba"), derived.Export());
        Assert.True(early.IsAlive()); // Export copies; BouncyCastle's Extract would have destroyed it
        early.Extract();
        Assert.False(early.IsAlive());
    }

    [Theory]
    [InlineData(PrfAlgorithm.tls_prf_sha256)]
    [InlineData(PrfAlgorithm.tls_prf_sha384)]
    public void Tls12_prf_matches_bouncycastle(int prf)
    {
        byte[] secret = RandomNumberGenerator.GetBytes(48);
        byte[] seed = RandomNumberGenerator.GetBytes(64);
        var ours = (DotNetTlsSecret)new DotNetTlsCrypto().CreateSecret(secret).DeriveUsingPrf(prf, "key expansion", seed, 200);
        byte[] theirs = new BcTlsCrypto().CreateSecret(secret).DeriveUsingPrf(prf, "key expansion", seed, 200).Extract();
        Assert.Equal(theirs, ours.Export());
    }

    [Fact]
    public void Resumption_secret_derives_the_res_binder_key_when_asked_for_ext_binder()
    {
        var crypto = new DotNetTlsCrypto();
        byte[] psk = RandomNumberGenerator.GetBytes(32);
        byte[] emptyHash = SHA256.HashData([]);
        TlsSecret plainEarly = crypto.HkdfInit(CryptoHashAlgorithm.sha256).HkdfExtract(CryptoHashAlgorithm.sha256, crypto.CreateSecret(psk));
        TlsSecret resumptionEarly = crypto.HkdfInit(CryptoHashAlgorithm.sha256).HkdfExtract(CryptoHashAlgorithm.sha256, crypto.Adopt((byte[])psk.Clone(), resumption: true));

        byte[] Binder(TlsSecret early, string label) => ((DotNetTlsSecret)early.DeriveUsingPrf(PrfAlgorithm.tls13_hkdf_sha256, label, emptyHash, 32)).Export();

        Assert.Equal(Binder(plainEarly, "res binder"), Binder(resumptionEarly, "ext binder"));
        Assert.NotEqual(Binder(plainEarly, "ext binder"), Binder(resumptionEarly, "ext binder"));
        Assert.Equal(Binder(plainEarly, "derived"), Binder(resumptionEarly, "derived")); // only the binder label changes
    }

    [Fact]
    public void Ecdsa_signatures_are_der_and_verify()
    {
        var credentials = new DotNetSignerCredentials(TestPki.Shared.Ecdsa, SignatureAndHashAlgorithm.GetInstance(HashAlgorithm.sha256, SignatureAlgorithm.ecdsa), tls13: true);
        byte[] hash = SHA256.HashData("data"u8);
        byte[] signature = credentials.GenerateRawSignature(hash);
        Assert.Equal(0x30, signature[0]); // ASN.1 SEQUENCE, not P1363 r||s
        Assert.Equal(signature.Length - 2, signature[1]);
        using ECDsa publicKey = TestPki.Shared.Ecdsa.Leaf.GetECDsaPublicKey()!;
        Assert.True(publicKey.VerifyHash(hash, signature, DSASignatureFormat.Rfc3279DerSequence));
        Assert.Throws<TlsFatalAlert>(() => credentials.GenerateRawSignature(new byte[20]));
        Assert.Same(TestPki.Shared.Ecdsa.Chain13, credentials.Certificate);
    }

    [Fact]
    public void Rsa_signatures_are_pkcs1_or_pss_and_verify()
    {
        using RSA publicKey = TestPki.Shared.Rsa.Leaf.GetRSAPublicKey()!;
        byte[] hash = SHA384.HashData("data"u8);
        var pkcs1 = new DotNetSignerCredentials(TestPki.Shared.Rsa, SignatureAndHashAlgorithm.GetInstance(HashAlgorithm.sha384, SignatureAlgorithm.rsa), tls13: false);
        Assert.True(publicKey.VerifyHash(hash, pkcs1.GenerateRawSignature(hash), HashAlgorithmName.SHA384, RSASignaturePadding.Pkcs1));
        Assert.Same(TestPki.Shared.Rsa.Chain, pkcs1.Certificate);
        var pss = new DotNetSignerCredentials(TestPki.Shared.Rsa, SignatureAndHashAlgorithm.rsa_pss_rsae_sha384, tls13: true);
        byte[] signature = pss.GenerateRawSignature(hash);
        Assert.True(publicKey.VerifyHash(hash, signature, HashAlgorithmName.SHA384, RSASignaturePadding.Pss));
        Assert.False(publicKey.VerifyHash(hash, signature, HashAlgorithmName.SHA384, RSASignaturePadding.Pkcs1));
    }

    [Fact]
    public void Signer_refuses_unsuitable_algorithms()
    {
        Assert.Throws<ArgumentException>(() => new DotNetSignerCredentials(TestPki.Shared.Rsa, SignatureAndHashAlgorithm.GetInstance(HashAlgorithm.sha256, SignatureAlgorithm.ecdsa), tls13: false));
        Assert.Throws<ArgumentException>(() => new DotNetSignerCredentials(TestPki.Shared.Ecdsa, SignatureAndHashAlgorithm.GetInstance(HashAlgorithm.sha1, SignatureAlgorithm.ecdsa), tls13: false));
        Assert.Throws<ArgumentException>(() => new DotNetSignerCredentials(TestPki.Shared.Rsa, SignatureAndHashAlgorithm.rsa_pss_pss_sha256, tls13: true));
        Assert.Throws<ArgumentException>(() => new DotNetSignerCredentials(TestPki.Shared.Ecdsa, SignatureAndHashAlgorithm.ed25519, tls13: true));
    }

    [Fact]
    public void Concurrent_signing_is_safe()
    {
        byte[] hash = SHA256.HashData("x"u8);
        using ECDsa publicKey = TestPki.Shared.Ecdsa.Leaf.GetECDsaPublicKey()!;
        Parallel.For(0, 400, _ =>
        {
            var credentials = new DotNetSignerCredentials(TestPki.Shared.Ecdsa, SignatureAndHashAlgorithm.GetInstance(HashAlgorithm.sha256, SignatureAlgorithm.ecdsa), tls13: false);
            Assert.True(publicKey.VerifyHash(hash, credentials.GenerateRawSignature(hash), DSASignatureFormat.Rfc3279DerSequence));
        });
    }

    [Theory]
    [InlineData("not on the curve")]
    [InlineData("wrong length")]
    [InlineData("compressed")]
    [InlineData("trailing")]
    [InlineData("another curve's point")]
    public void P256_peer_points_are_validated(string kind)
    {
        TlsAgreement agreement = new DotNetTlsCrypto().CreateECDomain(new TlsECConfig(NamedGroup.secp256r1)).CreateECDH();
        agreement.GenerateEphemeral();
        using var valid = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        ECParameters p = valid.ExportParameters(false);
        byte[] point = [4, .. p.Q.X!, .. p.Q.Y!];
        byte[] peer = kind switch
        {
            "not on the curve" => MutateY(point),
            "wrong length" => point[..64],
            "compressed" => [(byte)(2 + (p.Q.Y![31] & 1)), .. p.Q.X!],
            "trailing" => [.. point, 0],
            // secp256k1's generator: well formed, both coordinates below P-256's p, not on P-256.
            _ => [4, .. Convert.FromHexString("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
                  .. Convert.FromHexString("483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8")],
        };
        var e = Assert.Throws<TlsFatalAlert>(() =>
        {
            agreement.ReceivePeerValue(peer);
            agreement.CalculateSecret();
        });
        Assert.Equal(AlertDescription.illegal_parameter, e.AlertDescription);

        static byte[] MutateY(byte[] point)
        {
            byte[] copy = (byte[])point.Clone();
            copy[^1] ^= 1;
            return copy;
        }
    }

    [Fact]
    public void P256_agreement_matches_the_peers()
    {
        TlsAgreement agreement = new DotNetTlsCrypto().CreateECDomain(new TlsECConfig(NamedGroup.secp256r1)).CreateECDH();
        byte[] ours = agreement.GenerateEphemeral();
        using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        ECParameters p = peer.ExportParameters(false);
        agreement.ReceivePeerValue([4, .. p.Q.X!, .. p.Q.Y!]);
        var secret = (DotNetTlsSecret)agreement.CalculateSecret();
        using var oursPublic = ECDiffieHellman.Create(new ECParameters { Curve = ECCurve.NamedCurves.nistP256, Q = new ECPoint { X = ours[1..33], Y = ours[33..] } });
        Assert.Equal(peer.DeriveRawSecretAgreement(oursPublic.PublicKey), secret.Export());
    }

    [Fact]
    public void OpenSsl_x25519_gives_the_rfc_7748_test_vectors()
    {
        // RFC 7748 section 6.1.
        byte[] alicePrivate = Convert.FromHexString("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        byte[] bobPrivate = Convert.FromHexString("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        byte[] alicePublic = Convert.FromHexString("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        byte[] bobPublic = Convert.FromHexString("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        byte[] shared = Convert.FromHexString("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        using var alice = OpenSslX25519.FromPrivate(alicePrivate);
        using var bob = OpenSslX25519.FromPrivate(bobPrivate);
        Assert.Equal(alicePublic, alice.PublicKey());
        Assert.Equal(bobPublic, bob.PublicKey());
        Assert.Equal(shared, alice.Agree(bobPublic));
        Assert.Equal(shared, bob.Agree(alicePublic));

        // Small-order points (RFC 7748 section 6.1's all-zero check): 0, 1, and a point of order 8.
        Assert.Null(alice.Agree(new byte[32]));
        Assert.Null(alice.Agree(Convert.FromHexString("0100000000000000000000000000000000000000000000000000000000000000")));
        Assert.Null(alice.Agree(Convert.FromHexString("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")));
        Assert.Null(alice.Agree(new byte[31]));

        // OpenSSL's error queue is left empty, so .NET's next OpenSSL call finds no stale error.
        using var ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        byte[] data = [1, 2, 3];
        Assert.True(ecdsa.VerifyData(data, ecdsa.SignData(data, HashAlgorithmName.SHA256), HashAlgorithmName.SHA256));
    }

    [Fact]
    public void X25519_agreement_matches_the_peers_and_refuses_a_small_order_point()
    {
        TlsECDomain domain = new DotNetTlsCrypto().CreateECDomain(new TlsECConfig(NamedGroup.x25519));
        TlsAgreement agreement = domain.CreateECDH();
        byte[] ours = agreement.GenerateEphemeral();
        byte[] peerPrivate = RandomNumberGenerator.GetBytes(32);
        byte[] peerPublic = new byte[32];
        Rfc7748X25519.ScalarMultBase(peerPrivate, 0, peerPublic, 0);
        agreement.ReceivePeerValue(peerPublic);
        byte[] expected = new byte[32];
        Assert.True(Rfc7748X25519.CalculateAgreement(peerPrivate, 0, ours, 0, expected, 0));
        Assert.Equal(expected, ((DotNetTlsSecret)agreement.CalculateSecret()).Export());

        TlsAgreement small = domain.CreateECDH();
        small.GenerateEphemeral();
        small.ReceivePeerValue(new byte[32]); // the identity: the shared secret would be all zeros
        Assert.Equal(AlertDescription.illegal_parameter, Assert.Throws<TlsFatalAlert>(() => small.CalculateSecret()).AlertDescription);
    }
}
