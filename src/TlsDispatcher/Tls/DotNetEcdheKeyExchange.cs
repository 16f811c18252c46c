using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Tls;
using BcCertificate = Org.BouncyCastle.Crypto.Tls.Certificate;
using BcCertificateRequest = Org.BouncyCastle.Crypto.Tls.CertificateRequest;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// Server side of ECDHE_ECDSA / ECDHE_RSA (RFC 8422) on P-256 with .NET's <see cref="ECDiffieHellman"/>
/// (OpenSSL) instead of BouncyCastle's managed elliptic-curve arithmetic. Only the server role
/// is implemented: every client-side method and every client-authentication path refuses.
/// </summary>
/// <remarks>
/// <code>
/// ServerKeyExchange (RFC 8422 5.4, TLS 1.2):
///   ServerECDHParams: uint8 curve_type = 3 (named_curve), uint16 named_curve = 23 (secp256r1),
///                     opaque point&lt;1..2^8-1&gt; = 0x04 || X(32) || Y(32)  (uncompressed)
///   digitally-signed: uint8 hash, uint8 signature, opaque signature&lt;0..2^16-1&gt;
///                     over client_random || server_random || ServerECDHParams
/// ClientKeyExchange:  opaque point&lt;1..2^8-1&gt;, 65 bytes uncompressed on P-256
/// premaster secret:   x-coordinate of the shared point, 32 bytes
/// </code>
/// The client's point is imported into OpenSSL, which rejects points not on the curve.
/// </remarks>
public sealed class DotNetEcdheKeyExchange : TlsKeyExchange, IDisposable
{
    private const int CoordinateLength = 32;
    private const int PointLength = 1 + (2 * CoordinateLength);
    private const int ParamsLength = 4 + PointLength;

    private readonly int _keyExchange;
    private TlsContext? _context;
    private DotNetSignerCredentials? _credentials;
    private ECDiffieHellman? _ephemeral;
    private ECDiffieHellman? _peer;

    /// <summary>Creates the key exchange for <see cref="KeyExchangeAlgorithm.ECDHE_ECDSA"/> or <see cref="KeyExchangeAlgorithm.ECDHE_RSA"/>.</summary>
    public DotNetEcdheKeyExchange(int keyExchange)
    {
        if (keyExchange is not (KeyExchangeAlgorithm.ECDHE_ECDSA or KeyExchangeAlgorithm.ECDHE_RSA))
            throw new ArgumentOutOfRangeException(nameof(keyExchange));
        _keyExchange = keyExchange;
    }

    /// <inheritdoc/>
    public bool RequiresServerKeyExchange => true;

    /// <inheritdoc/>
    public void Init(TlsContext context) => _context = context;

    /// <inheritdoc/>
    public void SkipServerCredentials() => throw new TlsFatalAlert(AlertDescription.internal_error);

    /// <inheritdoc/>
    public void ProcessServerCredentials(TlsCredentials serverCredentials)
    {
        if (serverCredentials is not DotNetSignerCredentials credentials)
            throw new TlsFatalAlert(AlertDescription.internal_error);
        byte expected = _keyExchange == KeyExchangeAlgorithm.ECDHE_ECDSA ? SignatureAlgorithm.ecdsa : SignatureAlgorithm.rsa;
        if (credentials.SignatureAndHashAlgorithm.Signature != expected)
            throw new TlsFatalAlert(AlertDescription.internal_error);
        _credentials = credentials;
    }

    /// <inheritdoc/>
    public void ProcessServerCertificate(BcCertificate serverCertificate) => throw new TlsFatalAlert(AlertDescription.unexpected_message);

    /// <inheritdoc/>
    public byte[] GenerateServerKeyExchange()
    {
        if (_context is null || _credentials is null)
            throw new TlsFatalAlert(AlertDescription.internal_error);

        _ephemeral = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        ECParameters parameters = _ephemeral.ExportParameters(false);
        if (parameters.Q.X?.Length != CoordinateLength || parameters.Q.Y?.Length != CoordinateLength)
            throw new TlsFatalAlert(AlertDescription.internal_error);

        Span<byte> ecParams = stackalloc byte[ParamsLength];
        ecParams[0] = 3;      // named_curve
        ecParams[1] = 0;
        ecParams[2] = 23;     // secp256r1
        ecParams[3] = PointLength;
        ecParams[4] = 4;      // uncompressed
        parameters.Q.X.CopyTo(ecParams.Slice(5));
        parameters.Q.Y.CopyTo(ecParams.Slice(5 + CoordinateLength));

        SecurityParameters sp = _context.SecurityParameters;
        using var hash = IncrementalHash.CreateHash(_credentials.HashAlgorithmName);
        hash.AppendData(sp.ClientRandom);
        hash.AppendData(sp.ServerRandom);
        hash.AppendData(ecParams);
        byte[] signature = _credentials.GenerateCertificateSignature(hash.GetHashAndReset());

        byte[] result = new byte[ParamsLength + 4 + signature.Length];
        ecParams.CopyTo(result);
        result[ParamsLength] = _credentials.SignatureAndHashAlgorithm.Hash;
        result[ParamsLength + 1] = _credentials.SignatureAndHashAlgorithm.Signature;
        result[ParamsLength + 2] = (byte)(signature.Length >> 8);
        result[ParamsLength + 3] = (byte)signature.Length;
        signature.CopyTo(result, ParamsLength + 4);
        return result;
    }

    /// <inheritdoc/>
    public void SkipServerKeyExchange() => throw new TlsFatalAlert(AlertDescription.unexpected_message);

    /// <inheritdoc/>
    public void ProcessServerKeyExchange(Stream input) => throw new TlsFatalAlert(AlertDescription.unexpected_message);

    /// <inheritdoc/>
    public void ValidateCertificateRequest(BcCertificateRequest certificateRequest) => throw new TlsFatalAlert(AlertDescription.internal_error);

    /// <inheritdoc/>
    public void SkipClientCredentials()
    {
        // No CertificateRequest is ever sent: nothing to skip.
    }

    /// <inheritdoc/>
    public void ProcessClientCredentials(TlsCredentials clientCredentials) => throw new TlsFatalAlert(AlertDescription.internal_error);

    /// <inheritdoc/>
    public void ProcessClientCertificate(BcCertificate clientCertificate) => throw new TlsFatalAlert(AlertDescription.unexpected_message);

    /// <inheritdoc/>
    public void GenerateClientKeyExchange(Stream output) => throw new TlsFatalAlert(AlertDescription.internal_error);

    /// <inheritdoc/>
    public void ProcessClientKeyExchange(Stream input)
    {
        ArgumentNullException.ThrowIfNull(input);
        int length = input.ReadByte();
        if (length < 0)
            throw new TlsFatalAlert(AlertDescription.decode_error);
        if (length != PointLength)
            throw new TlsFatalAlert(AlertDescription.illegal_parameter);
        byte[] point = new byte[PointLength];
        if (input.ReadAtLeast(point, PointLength, throwOnEndOfStream: false) != PointLength)
            throw new TlsFatalAlert(AlertDescription.decode_error);
        if (input.CanSeek && input.Position != input.Length)
            throw new TlsFatalAlert(AlertDescription.decode_error);
        if (point[0] != 4)
            throw new TlsFatalAlert(AlertDescription.illegal_parameter);
        ImportPeerPoint(point.AsSpan(1, CoordinateLength), point.AsSpan(1 + CoordinateLength, CoordinateLength));
    }

    private void ImportPeerPoint(ReadOnlySpan<byte> x, ReadOnlySpan<byte> y)
    {
        var parameters = new ECParameters
        {
            Curve = ECCurve.NamedCurves.nistP256,
            Q = new ECPoint { X = x.ToArray(), Y = y.ToArray() },
        };
        try
        {
            _peer?.Dispose();
            _peer = ECDiffieHellman.Create(parameters);
        }
        catch (CryptographicException e)
        {
            // Not on the curve (or otherwise unusable).
            throw new TlsFatalAlert(AlertDescription.illegal_parameter, e);
        }
    }

    /// <inheritdoc/>
    public byte[] GeneratePremasterSecret()
    {
        if (_ephemeral is null || _peer is null)
            throw new TlsFatalAlert(AlertDescription.internal_error);
        try
        {
            using ECDiffieHellmanPublicKey peerKey = _peer.PublicKey;
            return _ephemeral.DeriveRawSecretAgreement(peerKey);
        }
        catch (CryptographicException e)
        {
            throw new TlsFatalAlert(AlertDescription.illegal_parameter, e);
        }
        finally
        {
            Dispose();
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _ephemeral?.Dispose();
        _ephemeral = null;
        _peer?.Dispose();
        _peer = null;
    }
}
