using System.Security.Cryptography;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// One ephemeral ECDH agreement. P-256: .NET's <see cref="ECDiffieHellman"/> (OpenSSL), which also validates the
/// client's point (on the curve, not the identity) when importing it. X25519: .NET has no X25519, so this is OpenSSL's
/// through <see cref="OpenSslX25519"/> (an all-zero shared secret, from a small-order point, is refused); the shared
/// secret becomes a <see cref="DotNetTlsSecret"/> either way.
/// </summary>
public sealed class DotNetEcdhAgreement : TlsAgreement
{
    private const int P256Coordinate = 32;
    private readonly DotNetTlsCrypto _crypto;
    private readonly int _namedGroup;
    private ECDiffieHellman? _p256;
    private OpenSslX25519.PrivateKey? _x25519;
    private byte[]? _peer;

    internal DotNetEcdhAgreement(DotNetTlsCrypto crypto, int namedGroup)
    {
        _crypto = crypto;
        _namedGroup = namedGroup;
    }

    /// <inheritdoc/>
    public byte[] GenerateEphemeral()
    {
        if (_namedGroup == NamedGroup.x25519)
        {
            _x25519 = OpenSslX25519.Generate();
            return _x25519.PublicKey();
        }

        _p256 = ECDiffieHellman.Create(ECCurve.NamedCurves.nistP256);
        ECParameters parameters = _p256.ExportParameters(false);
        byte[] point = new byte[1 + (2 * P256Coordinate)];
        point[0] = 0x04; // uncompressed (RFC 8446 4.2.8.2, RFC 8422 5.4.1)
        parameters.Q.X!.CopyTo(point, 1);
        parameters.Q.Y!.CopyTo(point, 1 + P256Coordinate);
        return point;
    }

    /// <inheritdoc/>
    public void ReceivePeerValue(byte[] peerValue)
    {
        ArgumentNullException.ThrowIfNull(peerValue);
        int expected = _namedGroup == NamedGroup.x25519 ? OpenSslX25519.KeySize : 1 + (2 * P256Coordinate);
        if (peerValue.Length != expected || (_namedGroup == NamedGroup.secp256r1 && peerValue[0] != 0x04))
            throw new TlsFatalAlert(AlertDescription.illegal_parameter);
        _peer = peerValue;
    }

    /// <inheritdoc/>
    public TlsSecret CalculateSecret()
    {
        byte[] peer = _peer ?? throw new TlsFatalAlert(AlertDescription.internal_error);
        if (_namedGroup == NamedGroup.x25519)
        {
            using OpenSslX25519.PrivateKey key = _x25519 ?? throw new TlsFatalAlert(AlertDescription.internal_error);
            _x25519 = null;
            byte[] shared = key.Agree(peer) ?? throw new TlsFatalAlert(AlertDescription.illegal_parameter);
            return _crypto.Adopt(shared);
        }

        using ECDiffieHellman mine = _p256 ?? throw new TlsFatalAlert(AlertDescription.internal_error);
        ECDiffieHellman theirs;
        try
        {
            theirs = ECDiffieHellman.Create(new ECParameters
            {
                Curve = ECCurve.NamedCurves.nistP256,
                Q = new ECPoint { X = peer.AsSpan(1, P256Coordinate).ToArray(), Y = peer.AsSpan(1 + P256Coordinate, P256Coordinate).ToArray() },
            });
        }
        catch (CryptographicException)
        {
            throw new TlsFatalAlert(AlertDescription.illegal_parameter); // not on the curve
        }

        using (theirs)
            return _crypto.Adopt(mine.DeriveRawSecretAgreement(theirs.PublicKey));
    }
}
