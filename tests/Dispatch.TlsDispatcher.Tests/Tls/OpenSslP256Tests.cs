using System.Security.Cryptography;
using Dispatch.TlsDispatcher.Tls;

namespace Dispatch.TlsDispatcher.Tests.Tls;

public sealed class OpenSslP256Tests
{
    [Fact]
    public void Agreement_matches_dotnets_both_ways()
    {
        for (int i = 0; i < 20; i++)
        {
            using var ours = OpenSslP256.Generate();
            byte[] ourPoint = ours.PublicKey();
            Assert.Equal(OpenSslP256.PointSize, ourPoint.Length);
            Assert.Equal(0x04, ourPoint[0]);

            using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
            ECParameters p = peer.ExportParameters(false);
            using var oursInDotNet = ECDiffieHellman.Create(new ECParameters { Curve = ECCurve.NamedCurves.nistP256, Q = new ECPoint { X = ourPoint[1..33], Y = ourPoint[33..] } });
            byte[] expected = peer.DeriveRawSecretAgreement(oursInDotNet.PublicKey);
            Assert.Equal(expected, ours.Agree([4, .. p.Q.X!, .. p.Q.Y!]));
        }

        using var a = OpenSslP256.Generate();
        using var b = OpenSslP256.Generate();
        byte[]? ab = a.Agree(b.PublicKey());
        Assert.NotNull(ab);
        Assert.Equal(ab, b.Agree(a.PublicKey()));
        Assert.NotEqual(a.PublicKey(), b.PublicKey());
    }

    [Fact]
    public void A_point_off_the_curve_badly_encoded_or_out_of_range_is_refused()
    {
        using var key = OpenSslP256.Generate();
        using var other = OpenSslP256.Generate();
        byte[] good = other.PublicKey();

        byte[] offCurve = (byte[])good.Clone();
        offCurve[^1] ^= 1;
        Assert.Null(key.Agree(offCurve));

        byte[] compressedPrefix = (byte[])good.Clone();
        compressedPrefix[0] = 0x02;
        Assert.Null(key.Agree(compressedPrefix));
        Assert.Null(key.Agree(good.AsSpan(0, 33)));
        Assert.Null(key.Agree([.. good, 0]));
        Assert.Null(key.Agree(new byte[OpenSslP256.PointSize]));

        // X = p (the field prime) with the generator's Y: a coordinate not below p.
        byte[] prime = Convert.FromHexString("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff");
        byte[] gy = Convert.FromHexString("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");
        Assert.Null(key.Agree([4, .. prime, .. gy]));

        // The generator itself is a valid point: agreeing with it gives our own public X.
        byte[] gx = Convert.FromHexString("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296");
        Assert.Equal(key.PublicKey()[1..33], key.Agree([4, .. gx, .. gy]));

        // OpenSSL's error queue is left empty, so .NET's next OpenSSL call finds no stale error.
        using var ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        byte[] data = [1, 2, 3];
        Assert.True(ecdsa.VerifyData(data, ecdsa.SignData(data, HashAlgorithmName.SHA256), HashAlgorithmName.SHA256));
    }

    [Fact]
    public async Task Keys_made_on_many_threads_at_once_agree_like_dotnets()
    {
        // Every key is made from the one P-256 group of the process (built by whichever thread comes first);
        // each agreement is checked against .NET's own, on 8 threads at once.
        using var start = new Barrier(8);
        Task<int>[] workers = Enumerable.Range(0, 8).Select(_ => Task.Factory.StartNew(
            () =>
            {
                start.SignalAndWait();
                int agreed = 0;
                for (int i = 0; i < 50; i++)
                {
                    using var ours = OpenSslP256.Generate();
                    byte[] ourPoint = ours.PublicKey();
                    using var peer = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
                    ECParameters p = peer.ExportParameters(false);
                    using var oursInDotNet = ECDiffieHellman.Create(new ECParameters { Curve = ECCurve.NamedCurves.nistP256, Q = new ECPoint { X = ourPoint[1..33], Y = ourPoint[33..] } });
                    byte[]? shared = ours.Agree([4, .. p.Q.X!, .. p.Q.Y!]);
                    if (shared is not null && shared.AsSpan().SequenceEqual(peer.DeriveRawSecretAgreement(oursInDotNet.PublicKey)))
                        agreed++;
                }

                return agreed;
            },
            TaskCreationOptions.LongRunning)).ToArray();
        int[] counts = await Task.WhenAll(workers);
        Assert.All(counts, c => Assert.Equal(50, c));
    }
}
