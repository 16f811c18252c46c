using System.Security.Cryptography;
using Dispatch.TlsDispatcher.Tls;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;

namespace Dispatch.TlsDispatcher.Tests.Tls;

public sealed class OpenSslHmacTests
{
    [Fact]
    public void Hkdf_gives_the_rfc_5869_test_vectors()
    {
        // RFC 5869 appendix A.1 (basic) and A.3 (no salt, no info), SHA-256.
        byte[] ikm = Convert.FromHexString("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b");
        byte[] prk = OpenSslHmac.Extract(HashAlgorithmName.SHA256, Convert.FromHexString("000102030405060708090a0b0c"), ikm);
        Assert.Equal(Convert.FromHexString("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"), prk);
        byte[] okm = new byte[42];
        OpenSslHmac.Expand(HashAlgorithmName.SHA256, prk, Convert.FromHexString("f0f1f2f3f4f5f6f7f8f9"), okm);
        Assert.Equal(Convert.FromHexString("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"), okm);

        prk = OpenSslHmac.Extract(HashAlgorithmName.SHA256, [], ikm);
        Assert.Equal(Convert.FromHexString("19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"), prk);
        OpenSslHmac.Expand(HashAlgorithmName.SHA256, prk, [], okm);
        Assert.Equal(Convert.FromHexString("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"), okm);
    }

    [Theory]
    [InlineData("SHA256")]
    [InlineData("SHA384")]
    [InlineData("SHA512")]
    public void Hkdf_matches_dotnets_for_every_length_and_key_size(string name)
    {
        var hash = new HashAlgorithmName(name);
        foreach (int saltLength in new[] { 0, 1, 32, 48, 64, 128, 200 })
        {
            byte[] salt = RandomNumberGenerator.GetBytes(saltLength);
            byte[] ikm = RandomNumberGenerator.GetBytes(saltLength + 7);
            byte[] prk = OpenSslHmac.Extract(hash, salt, ikm);
            Assert.Equal(HKDF.Extract(hash, ikm, salt), prk);
            foreach (int length in new[] { 1, 12, 16, 31, 32, 33, 48, 64, 65, 200 })
            {
                byte[] info = RandomNumberGenerator.GetBytes(length % 50);
                byte[] ours = new byte[length];
                OpenSslHmac.Expand(hash, prk, info, ours);
                byte[] theirs = new byte[length];
                HKDF.Expand(hash, prk, theirs, info);
                Assert.Equal(theirs, ours);
            }
        }
    }

    [Fact]
    public void Hkdf_refuses_what_dotnets_refuses()
    {
        byte[] prk = RandomNumberGenerator.GetBytes(32);
        Assert.Throws<ArgumentException>(() => OpenSslHmac.Expand(HashAlgorithmName.SHA256, prk.AsSpan(0, 31), [], new byte[16]));
        Assert.Throws<ArgumentException>(() => HKDF.Expand(HashAlgorithmName.SHA256, prk.AsSpan(0, 31), new byte[16], []));
        Assert.Throws<ArgumentException>(() => OpenSslHmac.Expand(HashAlgorithmName.SHA256, prk, [], new byte[(255 * 32) + 1]));
        Assert.Throws<ArgumentException>(() => HKDF.Expand(HashAlgorithmName.SHA256, prk, new byte[(255 * 32) + 1], []));
        byte[] longest = new byte[255 * 32];
        OpenSslHmac.Expand(HashAlgorithmName.SHA256, prk, [], longest);
        byte[] theirs = new byte[255 * 32];
        HKDF.Expand(HashAlgorithmName.SHA256, prk, theirs, []);
        Assert.Equal(theirs, longest);
        Assert.Throws<ArgumentException>(() => OpenSslHmac.Extract(HashAlgorithmName.SHA1, [], prk));
    }

    [Theory]
    [InlineData(PrfAlgorithm.tls_prf_sha256)]
    [InlineData(PrfAlgorithm.tls_prf_sha384)]
    public void Tls12_prf_matches_bouncycastles_for_every_length(int prf)
    {
        HashAlgorithmName hash = prf == PrfAlgorithm.tls_prf_sha384 ? HashAlgorithmName.SHA384 : HashAlgorithmName.SHA256;
        foreach (int length in new[] { 0, 12, 32, 40, 48, 72, 96, 97, 200 })
        {
            byte[] secret = RandomNumberGenerator.GetBytes(48);
            byte[] seed = RandomNumberGenerator.GetBytes(64);
            byte[] ours = new byte[length];
            OpenSslHmac.Prf(hash, secret, [.. "master secret"u8, .. seed], ours);
            byte[] theirs = new BcTlsCrypto().CreateSecret(secret).DeriveUsingPrf(prf, "master secret", seed, length).Extract();
            Assert.Equal(theirs, ours);
        }
    }

    [Fact]
    public async Task Derivations_on_many_threads_at_once_match_dotnets()
    {
        using var start = new Barrier(8);
        Task<int>[] workers = Enumerable.Range(0, 8).Select(w => Task.Factory.StartNew(
            () =>
            {
                var hash = w % 2 == 0 ? HashAlgorithmName.SHA256 : HashAlgorithmName.SHA384;
                start.SignalAndWait();
                int matched = 0;
                for (int i = 0; i < 200; i++)
                {
                    byte[] salt = RandomNumberGenerator.GetBytes(48);
                    byte[] ikm = RandomNumberGenerator.GetBytes(48);
                    byte[] info = RandomNumberGenerator.GetBytes(20);
                    byte[] prk = OpenSslHmac.Extract(hash, salt, ikm);
                    byte[] ours = new byte[80];
                    OpenSslHmac.Expand(hash, prk, info, ours);
                    if (prk.AsSpan().SequenceEqual(HKDF.Extract(hash, ikm, salt)) && ours.AsSpan().SequenceEqual(HKDF.Expand(hash, prk, 80, info)))
                        matched++;
                }

                return matched;
            },
            TaskCreationOptions.LongRunning)).ToArray();
        int[] counts = await Task.WhenAll(workers);
        Assert.All(counts, c => Assert.Equal(200, c));
    }
}
