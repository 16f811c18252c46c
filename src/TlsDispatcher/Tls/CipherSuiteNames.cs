namespace Dispatch.TlsDispatcher.Tls;

/// <summary>Names of the cipher suites and alerts this server uses, for logs and connection metadata.</summary>
public static class CipherSuiteNames
{
    /// <summary>IANA name of one of our cipher suites, the hex code point otherwise, null for a negative value.</summary>
    public static string? IanaName(int cipherSuite) => cipherSuite switch
    {
        < 0 => null,
        0x1301 => "TLS_AES_128_GCM_SHA256",
        0x1302 => "TLS_AES_256_GCM_SHA384",
        0x1303 => "TLS_CHACHA20_POLY1305_SHA256",
        0xC02B => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xC02C => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xCCA9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0xC02F => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xC030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xCCA8 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        _ => $"0x{cipherSuite:X4}",
    };
}
