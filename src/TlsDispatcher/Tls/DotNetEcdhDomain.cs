using Org.BouncyCastle.Tls.Crypto;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>The ECDH group of one key exchange: X25519 or P-256 (<see cref="DotNetEcdhAgreement"/>).</summary>
public sealed class DotNetEcdhDomain : TlsECDomain
{
    private readonly DotNetTlsCrypto _crypto;
    private readonly int _namedGroup;

    internal DotNetEcdhDomain(DotNetTlsCrypto crypto, int namedGroup)
    {
        _crypto = crypto;
        _namedGroup = namedGroup;
    }

    /// <inheritdoc/>
    public TlsAgreement CreateECDH() => new DotNetEcdhAgreement(_crypto, _namedGroup);
}
