using Org.BouncyCastle.Tls;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>Which implementation performs the ECDHE P-256 key agreement.</summary>
public enum BcKeyExchangeImplementation
{
    /// <summary>.NET <see cref="System.Security.Cryptography.ECDiffieHellman"/> (OpenSSL). The default.</summary>
    DotNet,

    /// <summary>BouncyCastle's managed ECDH (kept for comparison).</summary>
    BouncyCastle,
}

/// <summary>
/// The BouncyCastle TlsServer policy of a terminated vhost: TLS 1.3 and 1.2; AEAD suites only (TLS 1.3's three, and
/// ECDHE_ECDSA / ECDHE_RSA with AES-GCM or ChaCha20-Poly1305 in TLS 1.2), server preference; groups X25519 then P-256
/// (a client whose only usable key share is P-256 gets P-256, with no HelloRetryRequest);
/// certificate from <see cref="BcServerCredentials"/> (ECDSA when the client accepts ecdsa_secp256r1_sha256 or, in
/// TLS 1.2, ecdsa with SHA-2; RSA otherwise, signing with RSA-PSS in TLS 1.3 and PKCS#1 v1.5 or PSS in TLS 1.2);
/// ALPN with server preference (no_application_protocol when nothing is common); no client certificates, no
/// renegotiation, no 0-RTT, no session IDs or TLS 1.2 tickets.
/// </summary>
internal sealed class DispatchTlsServer : DefaultTlsServer
{
    private static readonly int[] Tls13Suites =
    [
        CipherSuite.TLS_AES_128_GCM_SHA256,
        CipherSuite.TLS_AES_256_GCM_SHA384,
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
    ];

    private static readonly int[] EcdsaSuites =
    [
        CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ];

    private static readonly int[] RsaSuites =
    [
        CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];

    // Server preference, per key type and version.
    private static readonly int[] Ecdsa13 = [SignatureScheme.ecdsa_secp256r1_sha256];
    private static readonly int[] Rsa13 = [SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pss_rsae_sha512];
    private static readonly int[] Ecdsa12 = [SignatureScheme.ecdsa_secp256r1_sha256, SignatureScheme.ecdsa_secp384r1_sha384, SignatureScheme.ecdsa_secp521r1_sha512];
    private static readonly int[] Rsa12 =
    [
        SignatureScheme.rsa_pkcs1_sha256, SignatureScheme.rsa_pkcs1_sha384, SignatureScheme.rsa_pkcs1_sha512,
        SignatureScheme.rsa_pss_rsae_sha256, SignatureScheme.rsa_pss_rsae_sha384, SignatureScheme.rsa_pss_rsae_sha512,
    ];

    private static readonly int[] Groups = [NamedGroup.x25519, NamedGroup.secp256r1];

    private bool _p256ShareOnly;

    private readonly BcServerCredentials _credentials;
    private readonly List<ProtocolName> _applicationProtocols;
    private readonly IReadOnlyList<string> _applicationProtocolNames;
    private readonly DotNetTlsCrypto _crypto;
    private readonly SessionTicketKeys? _tickets;
    private readonly string? _vhost;

    /// <param name="tickets">Session-ticket keys (TLS 1.3 resumption), or null for none.</param>
    /// <param name="vhost">The vhost this connection was routed to: tickets are issued for it and accepted only for it.</param>
    public DispatchTlsServer(DotNetTlsCrypto crypto, BcServerCredentials credentials, IReadOnlyList<string> applicationProtocols, SessionTicketKeys? tickets = null, string? vhost = null)
        : base(crypto)
    {
        _crypto = crypto;
        _tickets = vhost is null ? null : tickets;
        _vhost = vhost;
        _credentials = credentials;
        _applicationProtocolNames = applicationProtocols;
        _applicationProtocols = applicationProtocols.Select(ProtocolName.AsUtf8Encoding).ToList();
    }

    public bool HandshakeComplete { get; private set; }

    /// <summary>True when the client may be sent a NewSessionTicket: tickets configured, and it offered psk_dhe_ke (RFC 8446 4.6.1).</summary>
    public bool ClientAcceptsTickets { get; private set; }

    /// <summary>The ticket keys and vhost, when tickets are on.</summary>
    public (SessionTicketKeys Keys, string Vhost)? Tickets => _tickets is null ? null : (_tickets, _vhost!);

    /// <summary>True when the client offered PSK identities (tickets) in its ClientHello.</summary>
    public bool PskOffered { get; private set; }

    /// <summary>True once a ticket of ours was accepted as the PSK (its binder is checked next; a bad one ends the handshake).</summary>
    public bool Resumed { get; private set; }

    public string? SelectedApplicationProtocol => HandshakeComplete || m_selectedProtocolName is not null ? m_selectedProtocolName?.GetUtf8Decoding() : null;

    public int SelectedCipherSuite { get; private set; } = -1;

    public ProtocolVersion? SelectedVersion { get; private set; }

    public BcKeyType? SelectedKeyType { get; private set; }

    public SignatureAndHashAlgorithm? SelectedSignature { get; private set; }

    public short? AlertSent { get; private set; }

    public short? AlertReceived { get; private set; }

    public string? AlertMessage { get; private set; }

    public Exception? AlertCause { get; private set; }

    public bool CloseNotifyReceived { get; private set; }

    /// <summary>Our own explanation of a refusal (for logs), when we raised it.</summary>
    public string? Reason { get; private set; }

    /// <summary>The connection's security parameters (secrets, suite, version), once the handshake has begun.</summary>
    public SecurityParameters? Parameters => m_context?.SecurityParameters;

    protected override ProtocolVersion[] GetSupportedVersions() => ProtocolVersion.TLSv13.DownTo(ProtocolVersion.TLSv12);

    protected override int[] GetSupportedCipherSuites() => [.. Tls13Suites, .. EcdsaSuites, .. RsaSuites];

    // Called once the client's extensions are known: TLS 1.2 suites only for a key we have and can sign with for
    // this client (the TLS 1.3 suites do not name the key).
    public override int[] GetCipherSuites()
    {
        var suites = new List<int>(Tls13Suites);
        // In TLS 1.2 the client's supported_groups also bound the curve of the server's ECDSA key (RFC 8422 5.1;
        // OpenSSL answers illegal_parameter otherwise): a client that lists groups without P-256 gets the RSA key.
        int[]? clientGroups = m_context.SecurityParameters.ClientSupportedGroups;
        if (_credentials.Ecdsa is not null && Choose(Ecdsa12) is not null && (clientGroups is null || Array.IndexOf(clientGroups, NamedGroup.secp256r1) >= 0))
            suites.AddRange(EcdsaSuites);
        if (_credentials.Rsa is not null && Choose(Rsa12) is not null)
            suites.AddRange(RsaSuites);
        return [.. suites];
    }

    protected override bool PreferLocalCipherSuites() => true;

    public override int[] GetSupportedGroups() => Groups;

    // TLS 1.2 ECDHE: BouncyCastle's default takes any curve of the client's that is large enough; we have X25519
    // and P-256 only. A client listing neither gets no ECDHE suite (handshake_failure); one listing no groups at all
    // may be assumed to speak P-256 (RFC 8422 4).
    protected override int GetMaximumNegotiableCurveBits() => SelectECDH(0) >= 0 ? 256 : 0;

    protected override int SelectECDH(int minimumCurveBits)
    {
        int[]? client = m_context.SecurityParameters.ClientSupportedGroups;
        if (client is null)
            return NamedGroup.secp256r1;
        foreach (int group in Groups)
        {
            if (Array.IndexOf(client, group) >= 0)
                return group;
        }

        return -1;
    }

    // X25519 first, except for a client that sent a key share for P-256 and none for X25519: it gets P-256 in its own
    // order, with no HelloRetryRequest round trip (as OpenSSL and nginx do).
    public override bool PreferLocalSupportedGroups() => !_p256ShareOnly;

    protected override IList<ProtocolName>? GetProtocolNames() => _applicationProtocols.Count == 0 ? null : _applicationProtocols;

    // RFC 5746: a TLS 1.2 client that signals neither renegotiation_info nor the SCSV is still served (we never
    // renegotiate, so there is nothing to protect); BouncyCastle's default would refuse it with handshake_failure.
    public override void NotifySecureRenegotiation(bool secureRenegotiation)
    {
    }

    public override void ProcessClientExtensions(IDictionary<int, byte[]> clientExtensions)
    {
        base.ProcessClientExtensions(clientExtensions);
        if (clientExtensions is not null && TlsExtensionsUtilities.GetKeyShareClientHello(clientExtensions) is { } shares)
        {
            bool x25519 = false, p256 = false;
            foreach (KeyShareEntry share in shares)
            {
                x25519 |= share.NamedGroup == NamedGroup.x25519;
                p256 |= share.NamedGroup == NamedGroup.secp256r1;
            }

            _p256ShareOnly = p256 && !x25519;
        }

        ClientAcceptsTickets = _tickets is not null && clientExtensions is not null
            && TlsExtensionsUtilities.GetPskKeyExchangeModesExtension(clientExtensions) is { } modes
            && Array.IndexOf(modes, PskKeyExchangeMode.psk_dhe_ke) >= 0;
    }

    // TLS 1.3 resumption. BouncyCastle 2.7's server only knows external PSKs: a ticket of ours is turned into one whose
    // key is marked "resumption", so that its binder key is derived with "res binder" (DotNetTlsSecret) as the client
    // computes it. Only psk_dhe_ke is ever selected (BouncyCastle), so every resumption still does a fresh (EC)DHE.
    public override TlsPskExternal? GetExternalPsk(IList<PskIdentity> identities)
    {
        if (_tickets is null || identities is null)
            return null;
        PskOffered = identities.Count > 0;

        // The suite we are going to select: a ticket is usable only if its hash is that suite's (the PSK's PRF must
        // match, RFC 8446 4.2.11); a client that sends several tickets gets the first usable one.
        int suite = Array.Find(Tls13Suites, s => m_offeredCipherSuites is not null && Array.IndexOf(m_offeredCipherSuites, s) >= 0);
        foreach (PskIdentity identity in identities)
        {
            if (!_tickets.TryOpen(identity.Identity, _vhost!, out int ticketSuite, out byte[] psk))
                continue;
            if (suite == 0 || PrfOf(ticketSuite) != PrfOf(suite))
            {
                Array.Clear(psk);
                continue;
            }

            // BouncyCastle 2.7 then looks the identity up with OfferedPsks.GetIndexOfIdentity(new PskIdentity(identity,
            // 0)), whose Equals also compares obfuscated_ticket_age: it expects external PSKs (age 0) and would never
            // find a ticket (age = client's ticket age + age_add). We use no ticket age (no 0-RTT, RFC 8446 8), and
            // the binder and transcript hash the ClientHello's bytes, not this parsed copy: zero the copy's age.
            ObfuscatedTicketAge(identity) = 0;
            Resumed = true;
            return new BasicTlsPskExternal(identity.Identity, _crypto.Adopt(psk, resumption: true), PrfOf(ticketSuite));
        }

        return null;
    }

    [System.Runtime.CompilerServices.UnsafeAccessor(System.Runtime.CompilerServices.UnsafeAccessorKind.Field, Name = "m_obfuscatedTicketAge")]
    private static extern ref long ObfuscatedTicketAge(PskIdentity identity);

    /// <summary>The TLS 1.3 PRF of a suite.</summary>
    internal static int PrfOf(int suite) => suite == CipherSuite.TLS_AES_256_GCM_SHA384 ? PrfAlgorithm.tls13_hkdf_sha384 : PrfAlgorithm.tls13_hkdf_sha256;

    protected override ProtocolName SelectProtocolName()
    {
        try
        {
            return base.SelectProtocolName();
        }
        catch (TlsFatalAlert)
        {
            Reason = "no common ALPN protocol (we speak " + string.Join(", ", _applicationProtocolNames) + ")";
            throw;
        }
    }

    public override ProtocolVersion GetServerVersion()
    {
        try
        {
            SelectedVersion = base.GetServerVersion();
            return SelectedVersion;
        }
        catch (TlsFatalAlert)
        {
            Reason = "the client offers neither TLS 1.3 nor TLS 1.2";
            throw;
        }
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
            Reason = TlsUtilities.GetExtensionData(m_clientExtensions, ExtensionType.signature_algorithms) is null ? "the client sent no signature_algorithms (we do not sign with SHA-1)"
                : SelectECDH(0) < 0 ? "no common group (we speak X25519 and P-256)"
                : "no common cipher suite (we offer AES-GCM and ChaCha20-Poly1305 only, with ECDHE in TLS 1.2)";
            throw;
        }
    }

    public override TlsCredentials GetCredentials()
    {
        bool tls13 = TlsUtilities.IsTlsV13(m_context.ServerVersion);
        (BcCertifiedKey? key, SignatureAndHashAlgorithm? signature) = (null, null);
        if (tls13)
        {
            // The suite does not name the key: ECDSA when the client accepts it, RSA-PSS otherwise.
            if (_credentials.Ecdsa is not null && Choose(Ecdsa13) is { } ecdsa)
                (key, signature) = (_credentials.Ecdsa, ecdsa);
            else if (_credentials.Rsa is not null && Choose(Rsa13) is { } rsa)
                (key, signature) = (_credentials.Rsa, rsa);
            if (key is null || signature is null)
            {
                Reason = "the client accepts no signature scheme for our certificates (ecdsa_secp256r1_sha256, rsa_pss_rsae_*)";
                throw new TlsFatalAlert(AlertDescription.handshake_failure);
            }
        }
        else
        {
            (key, signature) = TlsUtilities.GetKeyExchangeAlgorithm(SelectedCipherSuite) switch
            {
                KeyExchangeAlgorithm.ECDHE_ECDSA => (_credentials.Ecdsa, Choose(Ecdsa12)),
                KeyExchangeAlgorithm.ECDHE_RSA => (_credentials.Rsa, Choose(Rsa12)),
                _ => (null, null),
            };
            if (key is null || signature is null)
                throw new TlsFatalAlert(AlertDescription.internal_error);
        }

        SelectedKeyType = key.KeyType;
        SelectedSignature = signature;
        return new DotNetSignerCredentials(key, signature, tls13);
    }

    public override void NotifyHandshakeComplete()
    {
        base.NotifyHandshakeComplete();
        HandshakeComplete = true;
    }

    public override void NotifyAlertRaised(short alertLevel, short alertDescription, string message, Exception cause)
    {
        if (alertLevel == AlertLevel.fatal || AlertSent is null)
        {
            AlertSent = alertDescription;
            AlertMessage = message;
            AlertCause = cause;
        }
    }

    public override void NotifyAlertReceived(short alertLevel, short alertDescription)
    {
        if (alertDescription == AlertDescription.close_notify)
            CloseNotifyReceived = true;
        else
            AlertReceived = alertDescription;
    }

    /// <summary>The first of <paramref name="preference"/> that the client lists in signature_algorithms, or null.</summary>
    private SignatureAndHashAlgorithm? Choose(int[] preference)
    {
        IList<SignatureAndHashAlgorithm>? offered = m_context.SecurityParameters.ClientSigAlgs;
        if (offered is null)
            return null; // no signature_algorithms: TLS 1.2's default would be SHA-1, which we do not sign with
        foreach (int scheme in preference)
        {
            foreach (SignatureAndHashAlgorithm candidate in offered)
            {
                if (SignatureScheme.From(candidate) == scheme)
                    return candidate;
            }
        }

        return null;
    }
}
