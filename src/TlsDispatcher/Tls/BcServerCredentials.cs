using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;
using Org.BouncyCastle.Tls.Crypto.Impl.BC;
using BcCertificate = Org.BouncyCastle.Tls.Certificate;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>Kind of a server key.</summary>
public enum BcKeyType
{
    /// <summary>ECDSA on P-256 (secp256r1).</summary>
    EcdsaP256,

    /// <summary>RSA, at least 2048 bits (RSA-PSS signatures in TLS 1.3; PKCS#1 v1.5 or PSS in TLS 1.2).</summary>
    Rsa,
}

/// <summary>
/// One certificate chain and its private key: the chain in BouncyCastle's form (sent in the
/// Certificate message) and the key as a .NET (OpenSSL) object that makes the signatures.
/// Built once per vhost and shared by all its connections.
/// </summary>
public sealed class BcCertifiedKey : IDisposable
{
    private const string OidEcPublicKey = "1.2.840.10045.2.1";
    private const string OidRsa = "1.2.840.113549.1.1.1";
    private const string OidP256 = "1.2.840.10045.3.1.7";

    private readonly AsymmetricAlgorithm _key;
    private readonly ConcurrentBag<AsymmetricAlgorithm> _spares = [];
    private bool _disposed;

    // Parses only our own certificates (BcTlsCertificate needs a BcTlsCrypto).
    private static readonly BcTlsCrypto CertificateCrypto = new DotNetTlsCrypto();

    private BcCertifiedKey(BcKeyType keyType, TlsCertificate[] chain, X509Certificate2 leaf, AsymmetricAlgorithm key)
    {
        KeyType = keyType;
        Chain = new BcCertificate(chain);
        var entries = new CertificateEntry[chain.Length];
        for (int i = 0; i < chain.Length; i++)
            entries[i] = new CertificateEntry(chain[i], null);
        Chain13 = new BcCertificate(TlsUtilities.EmptyBytes, entries);
        Leaf = leaf;
        _key = key;
    }

    /// <summary>ECDSA P-256 or RSA.</summary>
    public BcKeyType KeyType { get; }

    /// <summary>The chain as BouncyCastle sends it in TLS 1.2 (leaf first).</summary>
    public BcCertificate Chain { get; }

    /// <summary>The chain in TLS 1.3's form (empty request context, entries without extensions).</summary>
    public BcCertificate Chain13 { get; }

    /// <summary>The leaf certificate (no private key attached).</summary>
    public X509Certificate2 Leaf { get; }

    /// <summary>
    /// Loads a PEM chain (leaf first, then intermediates, as certbot's fullchain.pem) and a PEM
    /// private key: PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY").
    /// Checks that the key is ECDSA P-256 or RSA of at least 2048 bits and belongs to the leaf.
    /// </summary>
    /// <exception cref="CryptographicException">Unparseable or mismatching PEM.</exception>
    public static BcCertifiedKey FromPem(ReadOnlySpan<char> chainPem, ReadOnlySpan<char> keyPem)
    {
        var ders = new List<byte[]>();
        ReadOnlySpan<char> rest = chainPem;
        while (PemEncoding.TryFind(rest, out PemFields fields))
        {
            if (rest[fields.Label].SequenceEqual("CERTIFICATE"))
            {
                ReadOnlySpan<char> base64 = rest[fields.Base64Data];
                var der = new byte[fields.DecodedDataLength];
                if (!Convert.TryFromBase64Chars(base64, der, out int written) || written != der.Length)
                    throw new CryptographicException("certificate PEM: bad base64");
                ders.Add(der);
            }

            rest = rest[fields.Location.End.Value..];
        }

        if (ders.Count == 0)
            throw new CryptographicException("certificate PEM: no CERTIFICATE block");

        X509Certificate2 leaf = X509CertificateLoader.LoadCertificate(ders[0]);
        AsymmetricAlgorithm? key = null;
        try
        {
            string algorithm = leaf.PublicKey.Oid.Value ?? "";
            BcKeyType keyType;
            if (algorithm == OidEcPublicKey)
            {
                using ECDsa publicKey = leaf.GetECDsaPublicKey() ?? throw new CryptographicException("leaf has no ECDSA public key");
                ECParameters pub = publicKey.ExportParameters(false);
                if (pub.Curve.Oid?.Value != OidP256)
                    throw new CryptographicException($"ECDSA key on curve {pub.Curve.Oid?.FriendlyName ?? pub.Curve.Oid?.Value} is not supported, only P-256");
                var ecdsa = ECDsa.Create();
                key = ecdsa;
                ecdsa.ImportFromPem(keyPem);
                ECParameters priv = ecdsa.ExportParameters(false);
                if (priv.Curve.Oid?.Value != OidP256 || !priv.Q.X.AsSpan().SequenceEqual(pub.Q.X) || !priv.Q.Y.AsSpan().SequenceEqual(pub.Q.Y))
                    throw new CryptographicException("the private key does not match the leaf certificate");
                keyType = BcKeyType.EcdsaP256;
            }
            else if (algorithm == OidRsa)
            {
                using RSA publicKey = leaf.GetRSAPublicKey() ?? throw new CryptographicException("leaf has no RSA public key");
                if (publicKey.KeySize < 2048)
                    throw new CryptographicException($"RSA key of {publicKey.KeySize} bits is too small (minimum 2048)");
                var rsa = RSA.Create();
                key = rsa;
                rsa.ImportFromPem(keyPem);
                if (!rsa.ExportParameters(false).Modulus.AsSpan().SequenceEqual(publicKey.ExportParameters(false).Modulus))
                    throw new CryptographicException("the private key does not match the leaf certificate");
                keyType = BcKeyType.Rsa;
            }
            else
            {
                throw new CryptographicException($"leaf public key algorithm {algorithm} is not supported (ECDSA P-256 or RSA only)");
            }

            // Our own, already validated certificates: this is the only certificate parsing BouncyCastle does here.
            var chain = new TlsCertificate[ders.Count];
            for (int i = 0; i < ders.Count; i++)
                chain[i] = new EncodedTlsCertificate(CertificateCrypto, ders[i]);
            return new BcCertifiedKey(keyType, chain, leaf, key);
        }
        catch
        {
            key?.Dispose();
            leaf.Dispose();
            throw;
        }
    }

    /// <summary>Loads chain and key from PEM bytes (ASCII). The key bytes copied to chars are zeroed afterwards.</summary>
    public static BcCertifiedKey FromPem(ReadOnlySpan<byte> chainPem, ReadOnlySpan<byte> keyPem)
    {
        char[] chain = new char[chainPem.Length];
        char[] key = new char[keyPem.Length];
        try
        {
            Encoding.ASCII.GetChars(chainPem, chain);
            Encoding.ASCII.GetChars(keyPem, key);
            return FromPem(chain, key);
        }
        finally
        {
            Array.Clear(key);
        }
    }

    /// <summary>
    /// Signs a hash for a digitally-signed struct or a TLS 1.3 CertificateVerify: ECDSA as a DER SEQUENCE {r, s}, RSA
    /// as PKCS#1 v1.5 DigestInfo or RSA-PSS (salt as long as the hash, MGF1 with the same hash: RFC 8446 4.2.3).
    /// </summary>
    internal byte[] SignHash(ReadOnlySpan<byte> hash, HashAlgorithmName hashAlgorithm, bool pss = false)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);

        // .NET does not promise that one key object can sign on several threads at once: lend each signer its own copy.
        AsymmetricAlgorithm key = Rent();
        try
        {
            return key switch
            {
                // TLS wants the ASN.1 DER encoding (RFC 4492 5.4, RFC 8422 5.4); SignHash's default is IEEE P1363 (r||s).
                ECDsa ecdsa => ecdsa.SignHash(hash.ToArray(), DSASignatureFormat.Rfc3279DerSequence),
                RSA rsa => rsa.SignHash(hash.ToArray(), hashAlgorithm, pss ? RSASignaturePadding.Pss : RSASignaturePadding.Pkcs1),
                _ => throw new InvalidOperationException("unexpected key type"),
            };
        }
        finally
        {
            _spares.Add(key);
        }
    }

    private AsymmetricAlgorithm Rent()
    {
        if (_spares.TryTake(out AsymmetricAlgorithm? key))
            return key;
        return _key is ECDsa ecdsa ? CloneEcdsa(ecdsa) : CloneRsa((RSA)_key);
    }

    private ECDsa CloneEcdsa(ECDsa template)
    {
        ECParameters parameters;
        lock (_key)
            parameters = template.ExportParameters(true);
        try
        {
            return ECDsa.Create(parameters);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(parameters.D);
        }
    }

    private RSA CloneRsa(RSA template)
    {
        RSAParameters parameters;
        lock (_key)
            parameters = template.ExportParameters(true);
        try
        {
            return RSA.Create(parameters);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(parameters.D);
            CryptographicOperations.ZeroMemory(parameters.P);
            CryptographicOperations.ZeroMemory(parameters.Q);
            CryptographicOperations.ZeroMemory(parameters.DP);
            CryptographicOperations.ZeroMemory(parameters.DQ);
            CryptographicOperations.ZeroMemory(parameters.InverseQ);
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _key.Dispose();
        while (_spares.TryTake(out AsymmetricAlgorithm? key))
            key.Dispose();
        Leaf.Dispose();
    }
}

/// <summary>
/// The certificates of one terminated vhost: an ECDSA P-256 chain, an RSA chain, or one of each
/// (then ECDSA is used whenever the client can verify it, RSA otherwise). Built once, shared by
/// all the vhost's connections; thread-safe.
/// </summary>
public sealed class BcServerCredentials : IDisposable
{
    /// <summary>Creates credentials from one or two certified keys (at most one per key type).</summary>
    public BcServerCredentials(params IEnumerable<BcCertifiedKey> keys)
    {
        foreach (BcCertifiedKey key in keys)
        {
            switch (key.KeyType)
            {
                case BcKeyType.EcdsaP256 when Ecdsa is null:
                    Ecdsa = key;
                    break;
                case BcKeyType.Rsa when Rsa is null:
                    Rsa = key;
                    break;
                default:
                    throw new ArgumentException($"more than one {key.KeyType} key", nameof(keys));
            }
        }

        if (Ecdsa is null && Rsa is null)
            throw new ArgumentException("no key", nameof(keys));
    }

    /// <summary>The ECDSA P-256 chain and key, if any.</summary>
    public BcCertifiedKey? Ecdsa { get; }

    /// <summary>The RSA chain and key, if any.</summary>
    public BcCertifiedKey? Rsa { get; }

    /// <summary>Credentials with a single chain and key (see <see cref="BcCertifiedKey.FromPem(ReadOnlySpan{byte}, ReadOnlySpan{byte})"/>).</summary>
    public static BcServerCredentials FromPem(ReadOnlySpan<byte> chainPem, ReadOnlySpan<byte> keyPem)
        => new(BcCertifiedKey.FromPem(chainPem, keyPem));

    /// <inheritdoc/>
    public void Dispose()
    {
        Ecdsa?.Dispose();
        Rsa?.Dispose();
    }
}
