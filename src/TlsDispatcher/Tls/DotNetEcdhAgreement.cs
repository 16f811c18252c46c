using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// One ephemeral ECDH agreement, OpenSSL's either way. P-256: <see cref="OpenSslP256"/> (the client's point must decode
/// and lie on the curve; .NET's <see cref="System.Security.Cryptography.ECDiffieHellman"/> checked it twice more at the cost of two scalar
/// multiplications). X25519: .NET has no X25519, so <see cref="OpenSslX25519"/> (an all-zero shared secret, from a
/// small-order point, is refused). The shared secret becomes a <see cref="DotNetTlsSecret"/>.
/// </summary>
public sealed class DotNetEcdhAgreement : TlsAgreement
{
    private readonly DotNetTlsCrypto _crypto;
    private readonly int _namedGroup;
    private OpenSslP256.PrivateKey? _p256;
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

        _p256 = OpenSslP256.Generate();
        return _p256.PublicKey(); // uncompressed (RFC 8446 4.2.8.2, RFC 8422 5.4.1)
    }

    /// <inheritdoc/>
    public void ReceivePeerValue(byte[] peerValue)
    {
        ArgumentNullException.ThrowIfNull(peerValue);
        int expected = _namedGroup == NamedGroup.x25519 ? OpenSslX25519.KeySize : OpenSslP256.PointSize;
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

        using OpenSslP256.PrivateKey mine = _p256 ?? throw new TlsFatalAlert(AlertDescription.internal_error);
        _p256 = null;

        // Not on the curve (or a shared point at infinity): illegal_parameter, as before.
        return _crypto.Adopt(mine.Agree(peer) ?? throw new TlsFatalAlert(AlertDescription.illegal_parameter));
    }
}
