using Org.BouncyCastle.Tls.Crypto.Impl.BC;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// One of our own certificates as BouncyCastle sends it, answering <see cref="GetEncoded"/> with the DER it was
/// loaded from: <see cref="BcTlsCertificate"/> encodes its parsed ASN.1 structure again on every call, and the
/// Certificate message of every full handshake asks for each certificate of the chain (2.2% of the dispatcher's CPU
/// per TLS 1.3 handshake in a profile, besides the garbage; docs/operations.md, "Performance").
/// </summary>
/// <remarks>The DER is a certificate's own (certbot writes DER in its PEM files), which is also what a new encoding
/// of the parsed structure gives; each call returns a copy, as the base class does, so no caller can change it.</remarks>
public sealed class EncodedTlsCertificate : BcTlsCertificate
{
    private readonly byte[] _der;

    /// <summary>Parses <paramref name="der"/> (as <see cref="BcTlsCertificate"/> does) and keeps a copy of it.</summary>
    public EncodedTlsCertificate(BcTlsCrypto crypto, byte[] der)
        : base(crypto, der)
    {
        _der = (byte[])der.Clone();
    }

    /// <inheritdoc/>
    public override byte[] GetEncoded() => (byte[])_der.Clone();
}
