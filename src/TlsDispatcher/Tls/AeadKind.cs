namespace Dispatch.TlsDispatcher.Tls;

/// <summary>The AEAD algorithms of our cipher suites.</summary>
public enum AeadKind
{
    /// <summary>AES-GCM (128 or 256-bit key).</summary>
    AesGcm,

    /// <summary>ChaCha20-Poly1305 (RFC 8439).</summary>
    ChaCha20Poly1305,
}
