using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Dispatch.Wire.Payloads;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// The second termination engine: .NET SslStream over OpenSSL (TLS 1.3 and 1.2, X25519, session
/// tickets). Each vhost has its own certificate contexts, hence its own OpenSSL context and ticket
/// keys: a ticket issued for one tenant never resumes at another. No CipherSuitesPolicy is set on
/// purpose: .NET caches (and so resumes with) an OpenSSL context only without one. .NET's own default
/// list then applies: TLS 1.3 suites and ECDHE with AES-GCM, ChaCha20-Poly1305 or AES-CBC-SHA256/384;
/// no RSA key transport, no SHA-1 suites (the interop tests check both). The CBC suites are never
/// negotiated: a ClientHello offering no AEAD suite is refused before OpenSSL sees it (<see cref="OffersAead"/>),
/// and the server's preference puts AEAD first for the others — the same suites as the BouncyCastle engine.
/// </summary>
internal sealed class OpenSslCredentials : IDisposable
{
    /// <summary>The BouncyCastle engine's suites: AEAD only (TLS 1.3's three; ECDHE with AES-GCM or ChaCha20-Poly1305 in 1.2).</summary>
    private static readonly HashSet<ushort> AeadSuites =
    [
        (ushort)TlsCipherSuite.TLS_AES_128_GCM_SHA256,
        (ushort)TlsCipherSuite.TLS_AES_256_GCM_SHA384,
        (ushort)TlsCipherSuite.TLS_CHACHA20_POLY1305_SHA256,
        (ushort)TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        (ushort)TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        (ushort)TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        (ushort)TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        (ushort)TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        (ushort)TlsCipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];

    /// <summary>
    /// Whether the client offers one of the AEAD suites. A CipherSuitesPolicy would restrict OpenSSL to them, but .NET
    /// then stops caching the OpenSSL context, and with it session resumption; so a ClientHello that offers none is
    /// refused before OpenSSL sees it, and among the suites a client offers .NET's list (server preference) puts the
    /// AEAD ones first.
    /// </summary>
    public static bool OffersAead(ClientHelloInfo hello) => hello.CipherSuites.Any(AeadSuites.Contains);

    private readonly List<X509Certificate2> _owned = [];
    private readonly SslServerAuthenticationOptions? _ecdsa;
    private readonly SslServerAuthenticationOptions? _rsa;

    public OpenSslCredentials(IEnumerable<CertificatePem> certificates, bool offerH2)
    {
        List<SslApplicationProtocol> alpn = offerH2 ? [SslApplicationProtocol.Http2, SslApplicationProtocol.Http11] : [SslApplicationProtocol.Http11];
        foreach (var c in certificates)
        {
            var leaf = X509Certificate2.CreateFromPem(c.ChainPem, c.KeyPem);
            _owned.Add(leaf);
            var chain = new X509Certificate2Collection();
            chain.ImportFromPem(c.ChainPem);
            var intermediates = new X509Certificate2Collection();
            foreach (var cert in chain.Skip(1))
                intermediates.Add(cert);
            _owned.AddRange(chain);
            var options = new SslServerAuthenticationOptions
            {
                ServerCertificateContext = SslStreamCertificateContext.Create(leaf, intermediates, offline: true),
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ClientCertificateRequired = false,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                AllowRenegotiation = false,
                ApplicationProtocols = alpn,
            };
            if (leaf.GetECDsaPublicKey() is not null)
                _ecdsa ??= options;
            else
                _rsa ??= options;
        }

        if (_ecdsa is null && _rsa is null)
            throw new CryptographicException("no certificate");
    }

    /// <summary>ECDSA when the client can verify it (its signature algorithms name ECDSA), RSA otherwise.</summary>
    public SslServerAuthenticationOptions Select(ClientHelloInfo hello)
    {
        if (_ecdsa is null)
            return _rsa!;
        if (_rsa is null)
            return _ecdsa;
        var offersEcdsa = hello.SignatureAlgorithms.Count == 0 || hello.SignatureAlgorithms.Any(s => (s & 0xFF) == 3);
        return offersEcdsa ? _ecdsa : _rsa;
    }

    public void Dispose()
    {
        foreach (var c in _owned)
            c.Dispose();
    }
}

/// <summary>A stream that first returns bytes already read from the socket (the ClientHello), then the socket's.</summary>
internal sealed class PrefixedStream : Stream
{
    private readonly NetworkStream _inner;
    private ReadOnlyMemory<byte> _prefix;

    public PrefixedStream(ReadOnlyMemory<byte> prefix, Socket socket)
    {
        _prefix = prefix;
        _inner = new NetworkStream(socket, ownsSocket: false);
    }

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_prefix.IsEmpty)
            return await _inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        var n = Math.Min(buffer.Length, _prefix.Length);
        _prefix[..n].CopyTo(buffer);
        _prefix = _prefix[n..];
        return n;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => _inner.WriteAsync(buffer, cancellationToken);

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        _inner.WriteAsync(buffer, offset, count, cancellationToken);

    public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override void Write(byte[] buffer, int offset, int count) => _inner.Write(buffer, offset, count);

    public override void Flush() => _inner.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => _inner.FlushAsync(cancellationToken);

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            _inner.Dispose();
        base.Dispose(disposing);
    }
}
