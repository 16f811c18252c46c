using System.Security.Cryptography;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;
using BcCertificate = Org.BouncyCastle.Tls.Certificate;
using BcHashAlgorithm = Org.BouncyCastle.Tls.HashAlgorithm;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// BouncyCastle signer credentials whose signature is made by .NET (OpenSSL): the TLS 1.2 ServerKeyExchange or the
/// TLS 1.3 CertificateVerify. One per connection (it carries the scheme chosen for that client and the certificate in
/// the negotiated version's form); the key itself is shared through <see cref="BcCertifiedKey"/>.
/// </summary>
public sealed class DotNetSignerCredentials : TlsCredentialedSigner
{
    private readonly BcCertifiedKey _key;
    private readonly HashAlgorithmName _hashName;
    private readonly bool _pss;

    /// <summary>
    /// Credentials that sign with <paramref name="key"/> using <paramref name="algorithm"/>: ecdsa with sha256/384/512
    /// for an ECDSA key; rsa (PKCS#1 v1.5) with sha256/384/512 or rsa_pss_rsae_sha256/384/512 for an RSA key.
    /// </summary>
    /// <param name="tls13">True to present the chain in TLS 1.3's form.</param>
    public DotNetSignerCredentials(BcCertifiedKey key, SignatureAndHashAlgorithm algorithm, bool tls13)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(algorithm);
        (HashAlgorithmName? hash, bool pss) = Scheme(algorithm, key.KeyType);
        _hashName = hash ?? throw new ArgumentException($"signature scheme 0x{SignatureScheme.From(algorithm):X4} does not fit a {key.KeyType} key", nameof(algorithm));
        _pss = pss;
        _key = key;
        SignatureAndHashAlgorithm = algorithm;
        Certificate = tls13 ? key.Chain13 : key.Chain;
    }

    /// <inheritdoc/>
    public BcCertificate Certificate { get; }

    /// <inheritdoc/>
    public SignatureAndHashAlgorithm SignatureAndHashAlgorithm { get; }

    /// <summary>The hash as .NET names it.</summary>
    public HashAlgorithmName HashAlgorithmName => _hashName;

    /// <summary>Length in bytes of the hash this credential expects.</summary>
    public int HashLength => _hashName == HashAlgorithmName.SHA256 ? 32 : _hashName == HashAlgorithmName.SHA384 ? 48 : 64;

    /// <summary>
    /// The .NET hash and padding of a signature scheme for a key type, or (null, false) when the scheme does not fit
    /// (md5, sha1, sha224, rsa_pss_pss_*, ed25519, a curve other than P-256 in TLS 1.3, ...).
    /// </summary>
    internal static (HashAlgorithmName? Hash, bool Pss) Scheme(SignatureAndHashAlgorithm algorithm, BcKeyType keyType)
    {
        int scheme = SignatureScheme.From(algorithm);
        return (keyType, scheme) switch
        {
            (BcKeyType.EcdsaP256, SignatureScheme.ecdsa_secp256r1_sha256) => (HashAlgorithmName.SHA256, false),
            (BcKeyType.EcdsaP256, SignatureScheme.ecdsa_secp384r1_sha384) => (HashAlgorithmName.SHA384, false),
            (BcKeyType.EcdsaP256, SignatureScheme.ecdsa_secp521r1_sha512) => (HashAlgorithmName.SHA512, false),
            (BcKeyType.Rsa, SignatureScheme.rsa_pkcs1_sha256) => (HashAlgorithmName.SHA256, false),
            (BcKeyType.Rsa, SignatureScheme.rsa_pkcs1_sha384) => (HashAlgorithmName.SHA384, false),
            (BcKeyType.Rsa, SignatureScheme.rsa_pkcs1_sha512) => (HashAlgorithmName.SHA512, false),
            (BcKeyType.Rsa, SignatureScheme.rsa_pss_rsae_sha256) => (HashAlgorithmName.SHA256, true),
            (BcKeyType.Rsa, SignatureScheme.rsa_pss_rsae_sha384) => (HashAlgorithmName.SHA384, true),
            (BcKeyType.Rsa, SignatureScheme.rsa_pss_rsae_sha512) => (HashAlgorithmName.SHA512, true),
            _ => (null, false),
        };
    }

    /// <inheritdoc/>
    public byte[] GenerateRawSignature(byte[] hash)
    {
        ArgumentNullException.ThrowIfNull(hash);
        if (hash.Length != HashLength)
            throw new TlsFatalAlert(AlertDescription.internal_error);
        return _key.SignHash(hash, _hashName, _pss);
    }

    /// <inheritdoc/>
    public TlsStreamSigner? GetStreamSigner() => null;

    /// <summary>Hash name for a TLS 1.2 HashAlgorithm byte we sign with, or null (md5, sha1, sha224 and "intrinsic" 8 are refused).</summary>
    internal static HashAlgorithmName? HashName(short hash) => hash switch
    {
        BcHashAlgorithm.sha256 => HashAlgorithmName.SHA256,
        BcHashAlgorithm.sha384 => HashAlgorithmName.SHA384,
        BcHashAlgorithm.sha512 => HashAlgorithmName.SHA512,
        _ => null,
    };
}
