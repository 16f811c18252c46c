using Dispatch.Wire.Tls;
using Org.BouncyCastle.Crypto;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;

namespace Dispatch.Worker.Tests.Support;

/// <summary>
/// A BouncyCastle TLS server standing in for the dispatcher's handshake: one version, one suite, an ECDSA certificate.
/// When the handshake completes it turns its keys into the <see cref="TlsSessionState"/> the dispatcher would hand over
/// (TLS 1.3: the application traffic secrets; TLS 1.2: the write keys and IVs from the key block).
/// </summary>
internal sealed class BcTlsTestServer(BcTlsCrypto crypto, ProtocolVersion version, int suite, AsymmetricKeyParameter key, TlsCertificate certificate)
    : DefaultTlsServer(crypto)
{
    /// <summary>The session, once the handshake is complete.</summary>
    public TlsSessionState? Session { get; private set; }

    public override TlsCredentials GetCredentials()
    {
        var chain = TlsUtilities.IsTlsV13(m_context)
            ? new Certificate(TlsUtilities.EmptyBytes, [new CertificateEntry(certificate, null)])
            : new Certificate([certificate]);
        return new BcDefaultTlsCredentialedSigner(
            new TlsCryptoParameters(m_context), crypto, key, chain, SignatureAndHashAlgorithm.GetInstance(HashAlgorithm.sha256, SignatureAlgorithm.ecdsa));
    }

    public override void NotifyHandshakeComplete()
    {
        base.NotifyHandshakeComplete();
        var parameters = m_context.SecurityParameters;
        if (TlsUtilities.IsTlsV13(m_context))
        {
            // Extract destroys the secret: this server never uses its record layer again.
            Session = new TlsSessionState(
                TlsSessionState.Tls13, (ushort)parameters.CipherSuite, parameters.TrafficSecretClient.Extract(), parameters.TrafficSecretServer.Extract(), [], [], 0, 0);
            return;
        }

        var (keyLength, ivLength) = parameters.CipherSuite switch
        {
            CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 or CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => (16, 4),
            CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 or CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => (32, 4),
            _ => (32, 12),
        };
        byte[] seed = [.. parameters.ServerRandom, .. parameters.ClientRandom];
        var block = TlsUtilities.Prf(parameters, parameters.MasterSecret, "key expansion", seed, (2 * keyLength) + (2 * ivLength)).Extract();

        // Both sides have sent ChangeCipherSpec and Finished: one record each under the new keys.
        Session = new TlsSessionState(
            TlsSessionState.Tls12,
            (ushort)parameters.CipherSuite,
            block[..keyLength],
            block[keyLength..(2 * keyLength)],
            block[(2 * keyLength)..((2 * keyLength) + ivLength)],
            block[((2 * keyLength) + ivLength)..],
            1,
            1);
    }

    protected override ProtocolVersion[] GetSupportedVersions() => [version];

    protected override int[] GetSupportedCipherSuites() => [suite];
}
