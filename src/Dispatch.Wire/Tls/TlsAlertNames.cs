namespace Dispatch.Wire.Tls;

/// <summary>
/// Alert names as the RFCs spell them (RFC 8446 6, RFC 5246 7.2, RFC 7301), one table for the dispatcher's handshake
/// logs and the worker's record-layer logs.
/// </summary>
public static class TlsAlertNames
{
    /// <summary>The name of an alert description, or its number.</summary>
    public static string Name(short description) => description switch
    {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        47 => "illegal_parameter",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        116 => "certificate_required",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        120 => "no_application_protocol",
        _ => description.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>The name of an alert description the record layer sends or receives.</summary>
    public static string Name(TlsAlertDescription description) => Name((short)description);
}
