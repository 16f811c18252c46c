using System.Collections;
using System.Text;
using Org.BouncyCastle.Crypto.Tls;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>Which implementation performs the ECDHE P-256 key agreement.</summary>
public enum BcKeyExchangeImplementation
{
    /// <summary>.NET <see cref="System.Security.Cryptography.ECDiffieHellman"/> (OpenSSL). The default.</summary>
    DotNet,

    /// <summary>BouncyCastle's managed TlsECDheKeyExchange (kept for comparison).</summary>
    BouncyCastle,
}

/// <summary>
/// The BouncyCastle TlsServer policy of a terminated vhost: TLS 1.2 only, ECDHE with AEAD only,
/// P-256 only, server certificate from <see cref="BcServerCredentials"/> (ECDSA preferred),
/// ALPN by hand, no client certificates, no RSA key transport, no session tickets.
/// </summary>
internal sealed class DispatchTlsServer : DefaultTlsServer
{
    internal const byte AlertNoApplicationProtocol = 120;

    private const int ExtensionAlpn = 16;
    private const int ExtensionSupportedVersions = 43;

    // Server preference within one key type.
    private static readonly int[] EcdsaSuites =
    [
        CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite.DRAFT_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, // final code point 0xCCA9 despite the name
    ];

    private static readonly int[] RsaSuites =
    [
        CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite.DRAFT_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, // 0xCCA8
    ];

    private static readonly int[] P256Only = [NamedCurve.secp256r1];

    private readonly BcServerCredentials _credentials;
    private readonly IReadOnlyList<string> _applicationProtocols;
    private readonly BcKeyExchangeImplementation _keyExchangeImplementation;
    private readonly List<IDisposable> _disposables = [];
    private SignatureAndHashAlgorithm? _ecdsaSignature;
    private SignatureAndHashAlgorithm? _rsaSignature;

    public DispatchTlsServer(BcServerCredentials credentials, IReadOnlyList<string> applicationProtocols, BcKeyExchangeImplementation keyExchange)
        : base(DotNetTlsCipherFactory.Instance)
    {
        _credentials = credentials;
        _applicationProtocols = applicationProtocols;
        _keyExchangeImplementation = keyExchange;
    }

    public bool HandshakeComplete { get; private set; }

    public string? SelectedApplicationProtocol { get; private set; }

    public int SelectedCipherSuite { get; private set; } = -1;

    public BcKeyType? SelectedKeyType { get; private set; }

    public SignatureAndHashAlgorithm? SelectedSignature { get; private set; }

    public byte? AlertSent { get; private set; }

    public byte? AlertReceived { get; private set; }

    public string? AlertMessage { get; private set; }

    public Exception? AlertCause { get; private set; }

    public bool CloseNotifyReceived { get; private set; }

    /// <summary>Our own explanation of a refusal (for logs), when we raised it.</summary>
    public string? Reason { get; private set; }

    protected override ProtocolVersion MinimumVersion => ProtocolVersion.TLSv12;

    // BouncyCastle 1.8.10 defaults to TLS 1.1 at most: every modern client would fail.
    protected override ProtocolVersion MaximumVersion => ProtocolVersion.TLSv12;

    public override void ProcessClientExtensions(IDictionary clientExtensions)
    {
        base.ProcessClientExtensions(clientExtensions);

        // A client that lists supported_versions without TLS 1.2 (a TLS 1.3-only client) gets protocol_version
        // now, rather than a TLS 1.2 ServerHello it would have to reject itself.
        byte[]? versions = TlsUtilities.GetExtensionData(clientExtensions, ExtensionSupportedVersions);
        if (versions is not null && !OffersTls12(versions))
        {
            Reason = "the client does not offer TLS 1.2 (supported_versions)";
            throw new TlsFatalAlert(AlertDescription.protocol_version);
        }

        // P-256 only. A client without supported_groups may be assumed to support it (RFC 8422 4);
        // one that lists groups but not secp256r1 gets no ECC suite, hence handshake_failure.
        mNamedCurves = mNamedCurves is null || Array.IndexOf(mNamedCurves, NamedCurve.secp256r1) >= 0 ? P256Only : [];

        _ecdsaSignature = _credentials.Ecdsa is null ? null : ChooseSignature(SignatureAlgorithm.ecdsa);
        _rsaSignature = _credentials.Rsa is null ? null : ChooseSignature(SignatureAlgorithm.rsa);

        byte[]? alpn = TlsUtilities.GetExtensionData(clientExtensions, ExtensionAlpn);
        if (alpn is not null && _applicationProtocols.Count > 0)
            SelectedApplicationProtocol = ChooseApplicationProtocol(alpn);
    }

    protected override int[] GetCipherSuites()
    {
        // Called once the client's extensions are known: offer ECDSA suites only when the client can verify
        // an ECDSA signature with a hash we use, RSA likewise; ECDSA first.
        int count = (_ecdsaSignature is null ? 0 : EcdsaSuites.Length) + (_rsaSignature is null ? 0 : RsaSuites.Length);
        var suites = new int[count];
        int i = 0;
        if (_ecdsaSignature is not null)
        {
            EcdsaSuites.CopyTo(suites, i);
            i += EcdsaSuites.Length;
        }

        if (_rsaSignature is not null)
            RsaSuites.CopyTo(suites, i);
        return suites;
    }

    public override int GetSelectedCipherSuite()
    {
        try
        {
            int suite = base.GetSelectedCipherSuite();
            SelectedCipherSuite = suite;
            return suite;
        }
        catch (TlsFatalAlert)
        {
            Reason = mSupportedSignatureAlgorithms is null ? "the client sent no signature_algorithms (we do not sign with SHA-1)"
                : _ecdsaSignature is null && _rsaSignature is null ? "the client accepts no ECDSA/RSA PKCS#1 signature with SHA-256/384/512 for our certificates"
                : mNamedCurves is { Length: 0 } ? "the client does not offer the P-256 group"
                : "no common cipher suite (we offer ECDHE with AES-GCM or ChaCha20-Poly1305 only)";
            throw;
        }
    }

    public override TlsCredentials GetCredentials()
    {
        int keyExchange = TlsUtilities.GetKeyExchangeAlgorithm(mSelectedCipherSuite);
        (BcCertifiedKey? key, SignatureAndHashAlgorithm? signature) = keyExchange switch
        {
            KeyExchangeAlgorithm.ECDHE_ECDSA => (_credentials.Ecdsa, _ecdsaSignature),
            KeyExchangeAlgorithm.ECDHE_RSA => (_credentials.Rsa, _rsaSignature),
            _ => (null, null),
        };
        if (key is null || signature is null)
            throw new TlsFatalAlert(AlertDescription.internal_error);
        SelectedKeyType = key.KeyType;
        SelectedSignature = signature;
        return new DotNetSignerCredentials(key, signature);
    }

    public override TlsKeyExchange GetKeyExchange()
    {
        int keyExchange = TlsUtilities.GetKeyExchangeAlgorithm(mSelectedCipherSuite);
        if (keyExchange is not (KeyExchangeAlgorithm.ECDHE_ECDSA or KeyExchangeAlgorithm.ECDHE_RSA))
            throw new TlsFatalAlert(AlertDescription.internal_error);
        if (_keyExchangeImplementation == BcKeyExchangeImplementation.BouncyCastle)
            return new TlsECDheKeyExchange(keyExchange, mSupportedSignatureAlgorithms, P256Only, mClientECPointFormats, mServerECPointFormats);
        var exchange = new DotNetEcdheKeyExchange(keyExchange);
        _disposables.Add(exchange);
        return exchange;
    }

    public override IDictionary GetServerExtensions()
    {
        IDictionary extensions = TlsExtensionsUtilities.EnsureExtensionsInitialised(base.GetServerExtensions());
        if (SelectedApplicationProtocol is not null)
        {
            // ProtocolNameList with exactly one name (RFC 7301 3.1).
            int length = SelectedApplicationProtocol.Length;
            byte[] data = new byte[3 + length];
            data[0] = (byte)((length + 1) >> 8);
            data[1] = (byte)(length + 1);
            data[2] = (byte)length;
            Encoding.Latin1.GetBytes(SelectedApplicationProtocol, data.AsSpan(3));
            extensions[ExtensionAlpn] = data;
        }

        return extensions;
    }

    public override TlsCipher GetCipher()
    {
        TlsCipher cipher = base.GetCipher();
        if (cipher is IDisposable disposable)
            _disposables.Add(disposable);
        return cipher;
    }

    // No client certificates: no CertificateRequest, so no peer certificate is ever parsed.
    public override CertificateRequest? GetCertificateRequest() => null;

    public override void NotifyClientCertificate(Certificate clientCertificate) => throw new TlsFatalAlert(AlertDescription.unexpected_message);

    public override void NotifyHandshakeComplete()
    {
        base.NotifyHandshakeComplete();
        HandshakeComplete = true;
    }

    public override void NotifyAlertRaised(byte alertLevel, byte alertDescription, string message, Exception cause)
    {
        if (alertLevel == AlertLevel.fatal || AlertSent is null)
        {
            AlertSent = alertDescription;
            AlertMessage = message;
            AlertCause = cause;
        }
    }

    public override void NotifyAlertReceived(byte alertLevel, byte alertDescription)
    {
        if (alertDescription == AlertDescription.close_notify)
            CloseNotifyReceived = true;
        else
            AlertReceived = alertDescription;
    }

    public void DisposeResources()
    {
        foreach (IDisposable disposable in _disposables)
            disposable.Dispose();
        _disposables.Clear();
    }

    private SignatureAndHashAlgorithm? ChooseSignature(byte signature)
    {
        IList? offered = mSupportedSignatureAlgorithms;
        if (offered is null)
            return null; // no signature_algorithms: the default would be SHA-1, which we do not sign with

        // Server preference SHA-256, SHA-384, SHA-512 among the pairs the client lists. Entries whose hash byte is 8
        // (RSA-PSS, Ed25519: TLS 1.3 style code points) never match.
        SignatureAndHashAlgorithm? best = null;
        foreach (SignatureAndHashAlgorithm candidate in offered)
        {
            if (candidate.Signature != signature || DotNetSignerCredentials.HashName(candidate.Hash) is null)
                continue;
            if (best is null || candidate.Hash < best.Hash)
                best = candidate;
        }

        return best;
    }

    private string ChooseApplicationProtocol(byte[] extension)
    {
        // ProtocolNameList: uint16 length, then uint8-length-prefixed names (RFC 7301 3.1).
        if (extension.Length < 3 || ((extension[0] << 8) | extension[1]) != extension.Length - 2)
            throw new TlsFatalAlert(AlertDescription.decode_error);
        for (int p = 2; p < extension.Length;)
        {
            int length = extension[p];
            if (length == 0 || length > extension.Length - p - 1)
                throw new TlsFatalAlert(AlertDescription.decode_error);
            p += 1 + length;
        }

        // Server preference: the first of ours that the client lists.
        foreach (string ours in _applicationProtocols)
        {
            for (int p = 2; p < extension.Length; p += 1 + extension[p])
            {
                ReadOnlySpan<byte> name = extension.AsSpan(p + 1, extension[p]);
                if (name.Length == ours.Length && Latin1Equals(name, ours))
                    return ours;
            }
        }

        Reason = "no common ALPN protocol (we speak " + string.Join(", ", _applicationProtocols) + ")";
        throw new TlsFatalAlert(AlertNoApplicationProtocol);
    }

    private static bool Latin1Equals(ReadOnlySpan<byte> bytes, string text)
    {
        for (int i = 0; i < bytes.Length; i++)
        {
            if (bytes[i] != text[i])
                return false;
        }

        return true;
    }

    private static bool OffersTls12(byte[] versions)
    {
        if (versions.Length < 3 || versions[0] != versions.Length - 1 || (versions[0] & 1) != 0)
            throw new TlsFatalAlert(AlertDescription.decode_error);
        for (int i = 1; i + 1 < versions.Length; i += 2)
        {
            if (versions[i] == 3 && versions[i + 1] == 3)
                return true;
        }

        return false;
    }
}
