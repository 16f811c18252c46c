using Org.BouncyCastle.Tls;

namespace Dispatch.Worker.Tests.Support;

/// <summary>Test-only authentication: any server certificate, no client certificate.</summary>
internal sealed class AcceptAnyServerCertificate : TlsAuthentication
{
    public void NotifyServerCertificate(TlsServerCertificate serverCertificate)
    {
    }

    public TlsCredentials? GetClientCredentials(CertificateRequest certificateRequest) => null;
}
