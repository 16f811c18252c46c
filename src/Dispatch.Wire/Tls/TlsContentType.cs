namespace Dispatch.Wire.Tls;

/// <summary>A TLS record's content type (RFC 8446 5.1, RFC 5246 6.2.1).</summary>
public enum TlsContentType : byte
{
    /// <summary>Not a content type: the value an all-zero TLS 1.3 inner plaintext would carry.</summary>
    Invalid = 0,

    ChangeCipherSpec = 20,

    Alert = 21,

    Handshake = 22,

    ApplicationData = 23,
}
