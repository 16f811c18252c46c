using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Tls;
using BcCertificate = Org.BouncyCastle.Crypto.Tls.Certificate;
using BcHashAlgorithm = Org.BouncyCastle.Crypto.Tls.HashAlgorithm;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// BouncyCastle signer credentials whose signature is made by .NET (OpenSSL): the ServerKeyExchange
/// of ECDHE_ECDSA / ECDHE_RSA is signed here. One per connection (it carries the signature and hash
/// algorithm chosen for that client); the key itself is shared through <see cref="BcCertifiedKey"/>.
/// </summary>
public sealed class DotNetSignerCredentials : TlsSignerCredentials
{
    private readonly BcCertifiedKey _key;
    private readonly HashAlgorithmName _hashName;

    /// <summary>Credentials that sign with <paramref name="key"/> using <paramref name="algorithm"/> (hash sha256/384/512; signature rsa or ecdsa).</summary>
    public DotNetSignerCredentials(BcCertifiedKey key, SignatureAndHashAlgorithm algorithm)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(algorithm);
        byte expectedSignature = key.KeyType == BcKeyType.EcdsaP256 ? SignatureAlgorithm.ecdsa : SignatureAlgorithm.rsa;
        if (algorithm.Signature != expectedSignature)
            throw new ArgumentException($"signature algorithm {algorithm.Signature} does not fit a {key.KeyType} key", nameof(algorithm));
        _hashName = HashName(algorithm.Hash) ?? throw new ArgumentException($"hash algorithm {algorithm.Hash} is not supported", nameof(algorithm));
        _key = key;
        SignatureAndHashAlgorithm = algorithm;
    }

    /// <inheritdoc/>
    public BcCertificate Certificate => _key.Chain;

    /// <inheritdoc/>
    public SignatureAndHashAlgorithm SignatureAndHashAlgorithm { get; }

    /// <summary>The hash as .NET names it.</summary>
    public HashAlgorithmName HashAlgorithmName => _hashName;

    /// <summary>Length in bytes of the hash this credential expects.</summary>
    public int HashLength => SignatureAndHashAlgorithm.Hash switch
    {
        BcHashAlgorithm.sha256 => 32,
        BcHashAlgorithm.sha384 => 48,
        _ => 64,
    };

    /// <inheritdoc/>
    public byte[] GenerateCertificateSignature(byte[] hash)
    {
        ArgumentNullException.ThrowIfNull(hash);
        if (hash.Length != HashLength)
            throw new TlsFatalAlert(AlertDescription.internal_error);
        return _key.SignHash(hash, _hashName);
    }

    /// <summary>Hash name for a TLS 1.2 HashAlgorithm byte we sign with, or null (md5, sha1, sha224 and "intrinsic" 8 are refused).</summary>
    internal static HashAlgorithmName? HashName(byte hash) => hash switch
    {
        BcHashAlgorithm.sha256 => HashAlgorithmName.SHA256,
        BcHashAlgorithm.sha384 => HashAlgorithmName.SHA384,
        BcHashAlgorithm.sha512 => HashAlgorithmName.SHA512,
        _ => null,
    };
}
