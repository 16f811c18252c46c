namespace Dispatch.Wire.Tls;

/// <summary>The alert descriptions the record layer sends or names in its logs (RFC 8446 6).</summary>
public enum TlsAlertDescription : byte
{
    CloseNotify = 0,

    UnexpectedMessage = 10,

    BadRecordMac = 20,

    RecordOverflow = 22,

    HandshakeFailure = 40,

    IllegalParameter = 47,

    DecodeError = 50,

    DecryptError = 51,

    ProtocolVersion = 70,

    InternalError = 80,

    UserCanceled = 90,

    NoRenegotiation = 100,
}
