using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Prng;
using Org.BouncyCastle.Security;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// BouncyCastle's <see cref="TlsCrypto"/> with .NET (OpenSSL) doing the work on every path this server runs:
/// AES-GCM and ChaCha20-Poly1305 records (<see cref="DotNetAeadCipherImpl"/> under <see cref="RecordingAeadCipher"/>),
/// hashes and HMACs (<see cref="DotNetTlsHash"/>, <see cref="DotNetTlsHmac"/>), HKDF and the TLS 1.2 PRF
/// (<see cref="DotNetTlsSecret"/>), P-256 ECDH (<see cref="DotNetEcdhAgreement"/>) and signatures
/// (<see cref="DotNetSignerCredentials"/>). X25519 is OpenSSL's (<see cref="OpenSslX25519"/>; .NET has none), with its
/// result wrapped in our own secret type. Everything else (parsing our own certificates, the nonce generator) is
/// <see cref="BcTlsCrypto"/>'s. One instance per connection: it remembers the record cipher it made last (the
/// application-data cipher once the handshake is done), whose keys and sequence numbers the hand-off exports.
/// </summary>
public sealed class DotNetTlsCrypto : BcTlsCrypto, IDisposable
{
    private readonly List<RecordingAeadCipher> _ciphers = [];

    // .NET's RandomNumberGenerator (thread-safe) behind BouncyCastle's SecureRandom.
    private static readonly SecureRandom Random = new(new CryptoApiRandomGenerator());

    /// <summary>Creates the crypto of one connection.</summary>
    /// <param name="keyExchange">Who computes P-256 ECDH: .NET (default) or BouncyCastle (kept for comparison).</param>
    public DotNetTlsCrypto(BcKeyExchangeImplementation keyExchange = BcKeyExchangeImplementation.DotNet)
        : base(Random)
    {
        KeyExchange = keyExchange;
    }

    /// <summary>Who computes P-256 ECDH.</summary>
    public BcKeyExchangeImplementation KeyExchange { get; }

    /// <summary>The record cipher made last: after the handshake, the one protecting application data.</summary>
    public RecordingAeadCipher? LastCipher { get; private set; }

    /// <summary>.NET's name of a BouncyCastle CryptoHashAlgorithm we use.</summary>
    internal static HashAlgorithmName HashName(int cryptoHashAlgorithm) => cryptoHashAlgorithm switch
    {
        CryptoHashAlgorithm.sha256 => HashAlgorithmName.SHA256,
        CryptoHashAlgorithm.sha384 => HashAlgorithmName.SHA384,
        CryptoHashAlgorithm.sha512 => HashAlgorithmName.SHA512,
        _ => throw new TlsFatalAlert(AlertDescription.internal_error, $"hash {cryptoHashAlgorithm} is not used here"),
    };

    /// <summary>Wraps bytes as a secret of ours (the array is owned by the secret from then on).</summary>
    internal DotNetTlsSecret Adopt(byte[] data, bool resumption = false) => new(this, data, resumption);

    /// <inheritdoc/>
    public override TlsSecret CreateSecret(byte[] data)
    {
        ArgumentNullException.ThrowIfNull(data);
        return new DotNetTlsSecret(this, (byte[])data.Clone());
    }

    /// <inheritdoc/>
    public override TlsSecret AdoptSecret(TlsSecret secret) => secret is DotNetTlsSecret ? secret : base.AdoptSecret(secret);

    /// <inheritdoc/>
    public override TlsSecret HkdfInit(int cryptoHashAlgorithm) => new DotNetTlsSecret(this, new byte[TlsCryptoUtilities.GetHashOutputSize(cryptoHashAlgorithm)]);

    /// <inheritdoc/>
    public override TlsSecret CreateHybridSecret(TlsSecret s1, TlsSecret s2) => throw new TlsFatalAlert(AlertDescription.internal_error);

    /// <inheritdoc/>
    public override TlsSecret GenerateRsaPreMasterSecret(ProtocolVersion version) => throw new TlsFatalAlert(AlertDescription.internal_error);

    /// <inheritdoc/>
    public override bool HasNamedGroup(int namedGroup) => namedGroup is NamedGroup.x25519 or NamedGroup.secp256r1;

    /// <inheritdoc/>
    public override bool HasEncryptionAlgorithm(int encryptionAlgorithm) => encryptionAlgorithm switch
    {
        EncryptionAlgorithm.AES_128_GCM or EncryptionAlgorithm.AES_256_GCM => true,
        EncryptionAlgorithm.CHACHA20_POLY1305 => ChaCha20Poly1305.IsSupported,
        _ => false,
    };

    /// <inheritdoc/>
    public override bool HasCryptoHashAlgorithm(int cryptoHashAlgorithm) => cryptoHashAlgorithm is CryptoHashAlgorithm.sha256 or CryptoHashAlgorithm.sha384 or CryptoHashAlgorithm.sha512;

    /// <inheritdoc/>
    public override bool HasHkdfAlgorithm(int cryptoHashAlgorithm) => cryptoHashAlgorithm is CryptoHashAlgorithm.sha256 or CryptoHashAlgorithm.sha384;

    /// <inheritdoc/>
    public override bool HasDHAgreement() => false;

    /// <inheritdoc/>
    public override bool HasKemAgreement() => false;

    /// <inheritdoc/>
    public override bool HasRsaEncryption() => false;

    /// <inheritdoc/>
    public override bool HasSrpAuthentication() => false;

    /// <inheritdoc/>
    public override TlsECDomain CreateECDomain(TlsECConfig ecConfig)
    {
        ArgumentNullException.ThrowIfNull(ecConfig);
        if (KeyExchange == BcKeyExchangeImplementation.BouncyCastle)
            return base.CreateECDomain(ecConfig);
        return ecConfig.NamedGroup switch
        {
            NamedGroup.x25519 or NamedGroup.secp256r1 => new DotNetEcdhDomain(this, ecConfig.NamedGroup),
            _ => throw new TlsFatalAlert(AlertDescription.internal_error),
        };
    }

    /// <inheritdoc/>
    public override TlsHash CreateHash(int cryptoHashAlgorithm) => new DotNetTlsHash(HashName(cryptoHashAlgorithm));

    /// <inheritdoc/>
    public override TlsHmac CreateHmac(int macAlgorithm) => macAlgorithm switch
    {
        MacAlgorithm.hmac_sha256 => new DotNetTlsHmac(HashAlgorithmName.SHA256),
        MacAlgorithm.hmac_sha384 => new DotNetTlsHmac(HashAlgorithmName.SHA384),
        MacAlgorithm.hmac_sha512 => new DotNetTlsHmac(HashAlgorithmName.SHA512),
        _ => throw new TlsFatalAlert(AlertDescription.internal_error),
    };

    /// <inheritdoc/>
    public override TlsHmac CreateHmacForHash(int cryptoHashAlgorithm) => new DotNetTlsHmac(HashName(cryptoHashAlgorithm));

    /// <inheritdoc/>
    public override TlsCipher CreateCipher(TlsCryptoParameters cryptoParams, int encryptionAlgorithm, int macAlgorithm)
    {
        ArgumentNullException.ThrowIfNull(cryptoParams);
        RecordingAeadCipher cipher = encryptionAlgorithm switch
        {
            EncryptionAlgorithm.AES_128_GCM => RecordingAeadCipher.Create(cryptoParams, AeadKind.AesGcm, 16),
            EncryptionAlgorithm.AES_256_GCM => RecordingAeadCipher.Create(cryptoParams, AeadKind.AesGcm, 32),
            EncryptionAlgorithm.CHACHA20_POLY1305 when ChaCha20Poly1305.IsSupported => RecordingAeadCipher.Create(cryptoParams, AeadKind.ChaCha20Poly1305, 32),
            _ => throw new TlsFatalAlert(AlertDescription.internal_error),
        };
        // The previous cipher may still be reading (TLS 1.3: the client's Finished arrives under the handshake keys
        // after the application cipher exists): all are disposed with the connection.
        _ciphers.Add(cipher);
        LastCipher = cipher;
        return cipher;
    }

    /// <summary>Disposes the record ciphers (their keys are zeroed).</summary>
    public void Dispose()
    {
        foreach (RecordingAeadCipher cipher in _ciphers)
            cipher.Dispose();
        _ciphers.Clear();
    }
}
