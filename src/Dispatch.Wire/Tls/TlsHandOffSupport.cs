namespace Dispatch.Wire.Tls;

/// <summary>Which workers receive terminated TLS sessions as <see cref="Wire.ConnectionMode.HandedTls"/>.</summary>
public static class TlsHandOffSupport
{
    /// <summary>
    /// Whether Dispatch's own worker runs the record layer of a handed TLS session. False until the worker's record
    /// layer (TlsRecordProtection and its Kestrel middleware) is in this build: until then its pools keep the
    /// dispatcher's plaintext socketpair. A pool with <c>"program"</c> says so itself with <c>"tlsHandOff": true</c>.
    /// </summary>
    public static bool BuiltInWorker => true;
}
