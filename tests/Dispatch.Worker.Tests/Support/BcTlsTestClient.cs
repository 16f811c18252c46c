using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;

namespace Dispatch.Worker.Tests.Support;

/// <summary>A BouncyCastle TLS client of one version and one suite that accepts any server certificate.</summary>
internal sealed class BcTlsTestClient(TlsCrypto crypto, ProtocolVersion version, int suite, string? alpn) : DefaultTlsClient(crypto)
{
    public override TlsAuthentication GetAuthentication() => new AcceptAnyServerCertificate();

    protected override ProtocolVersion[] GetSupportedVersions() => [version];

    protected override int[] GetSupportedCipherSuites() => [suite];

    protected override IList<ProtocolName>? GetProtocolNames() => alpn is null ? null : [ProtocolName.AsUtf8Encoding(alpn)];
}
