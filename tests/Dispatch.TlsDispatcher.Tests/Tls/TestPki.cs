using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Dispatch.TlsDispatcher.Tls;

namespace Dispatch.TlsDispatcher.Tests.Tls;

/// <summary>A throwaway CA (ECDSA P-256) with an ECDSA P-256 leaf and an RSA-2048 leaf, as PEM files in a temp directory.</summary>
public sealed class TestPki : IDisposable
{
    private static readonly Lazy<TestPki> SharedInstance = new(() => new TestPki());

    public static readonly string[] DnsNames = ["localhost", "x.example", "both.example", "ecdsa.example", "rsa.example"];

    private TestPki()
    {
        Directory = Path.Combine(Path.GetTempPath(), "dispatch-tls-tests-" + Guid.NewGuid().ToString("N"));
        System.IO.Directory.CreateDirectory(Directory);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => DeleteDirectory();

        DateTimeOffset now = DateTimeOffset.UtcNow;
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var caRequest = new CertificateRequest("CN=Dispatch Test CA", caKey, HashAlgorithmName.SHA256);
        caRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        caRequest.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(caRequest.PublicKey, false));
        using X509Certificate2 ca = caRequest.CreateSelfSigned(now.AddDays(-1), now.AddDays(30));
        CaPem = ca.ExportCertificatePem();
        CaCertificate = X509CertificateLoader.LoadCertificate(ca.RawData);
        CaFile = Write("ca.pem", CaPem);

        var generator = X509SignatureGenerator.CreateForECDsa(caKey);

        using var ecKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        EcdsaChainPem = Issue(new CertificateRequest("CN=ecdsa leaf", ecKey, HashAlgorithmName.SHA256), ca, generator, now, 2) + CaPem;
        EcdsaKeyPkcs8Pem = ecKey.ExportPkcs8PrivateKeyPem();
        EcdsaKeySec1Pem = ecKey.ExportECPrivateKeyPem();

        using var rsaKey = RSA.Create(2048);
        RsaChainPem = Issue(new CertificateRequest("CN=rsa leaf", rsaKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1), ca, generator, now, 3) + CaPem;
        RsaKeyPkcs8Pem = rsaKey.ExportPkcs8PrivateKeyPem();
        RsaKeyPkcs1Pem = rsaKey.ExportRSAPrivateKeyPem();

        Ecdsa = BcCertifiedKey.FromPem(EcdsaChainPem, EcdsaKeyPkcs8Pem);
        Rsa = BcCertifiedKey.FromPem(RsaChainPem, RsaKeyPkcs8Pem);
        Both = new BcServerCredentials(Ecdsa, Rsa);
        EcdsaOnly = new BcServerCredentials(Ecdsa);
        RsaOnly = new BcServerCredentials(Rsa);
    }

    public static TestPki Shared => SharedInstance.Value;

    public string Directory { get; }

    public string CaPem { get; }

    public string CaFile { get; }

    public X509Certificate2 CaCertificate { get; }

    public string EcdsaChainPem { get; }

    public string EcdsaKeyPkcs8Pem { get; }

    public string EcdsaKeySec1Pem { get; }

    public string RsaChainPem { get; }

    public string RsaKeyPkcs8Pem { get; }

    public string RsaKeyPkcs1Pem { get; }

    public BcCertifiedKey Ecdsa { get; }

    public BcCertifiedKey Rsa { get; }

    public BcServerCredentials Both { get; }

    public BcServerCredentials EcdsaOnly { get; }

    public BcServerCredentials RsaOnly { get; }

    public X509ChainPolicy ChainPolicy()
    {
        var policy = new X509ChainPolicy
        {
            TrustMode = X509ChainTrustMode.CustomRootTrust,
            RevocationMode = X509RevocationMode.NoCheck,
        };
        policy.CustomTrustStore.Add(CaCertificate);
        return policy;
    }

    private static string Issue(CertificateRequest request, X509Certificate2 ca, X509SignatureGenerator generator, DateTimeOffset now, int serial)
    {
        var san = new SubjectAlternativeNameBuilder();
        foreach (string name in DnsNames)
            san.AddDnsName(name);
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        using X509Certificate2 leaf = request.Create(ca.SubjectName, generator, now.AddDays(-1), now.AddDays(30), [1, 0, (byte)serial]);
        return leaf.ExportCertificatePem() + "\n";
    }

    private string Write(string name, string content)
    {
        string path = Path.Combine(Directory, name);
        File.WriteAllText(path, content);
        return path;
    }

    private void DeleteDirectory()
    {
        try
        {
            System.IO.Directory.Delete(Directory, true);
        }
        catch (IOException)
        {
        }
    }

    public void Dispose()
    {
        Both.Dispose();
        DeleteDirectory();
    }
}
