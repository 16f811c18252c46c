using System.Security.Cryptography.X509Certificates;
using Dispatch.TlsDispatcher.Tls;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;

namespace Dispatch.TlsDispatcher.Tests.Tls;

public sealed class EncodedTlsCertificateTests
{
    [Fact]
    public void Chains_send_the_der_they_were_loaded_from_as_bouncycastle_would_encode_it()
    {
        foreach (var (key, pem) in new[] { (TestPki.Shared.Ecdsa, TestPki.Shared.EcdsaChainPem), (TestPki.Shared.Rsa, TestPki.Shared.RsaChainPem) })
        {
            var loaded = new X509Certificate2Collection();
            loaded.ImportFromPem(pem);
            Assert.Equal(loaded.Count, key.Chain.Length);
            for (int i = 0; i < loaded.Count; i++)
            {
                var certificate = Assert.IsType<EncodedTlsCertificate>(key.Chain.GetCertificateAt(i));
                Assert.Equal(loaded[i].RawData, certificate.GetEncoded());

                // What BouncyCastle's own class sends for the same DER: its encoding of the parsed structure.
                Assert.Equal(new BcTlsCertificate(new DotNetTlsCrypto(), loaded[i].RawData).GetEncoded(), certificate.GetEncoded());
                Assert.Same(certificate, key.Chain13.GetCertificateEntryList()[i].Certificate);
            }
        }
    }

    [Fact]
    public void Each_call_returns_a_copy_that_a_caller_cannot_change_for_the_next()
    {
        byte[] der = TestPki.Shared.Ecdsa.Leaf.RawData;
        var certificate = new EncodedTlsCertificate(new DotNetTlsCrypto(), der);
        byte[] first = certificate.GetEncoded();
        first[^1] ^= 0xFF;
        der[0] ^= 0xFF;
        try
        {
            Assert.Equal(TestPki.Shared.Ecdsa.Leaf.RawData, certificate.GetEncoded());
            Assert.NotSame(certificate.GetEncoded(), certificate.GetEncoded());
        }
        finally
        {
            der[0] ^= 0xFF;
        }
    }
}
