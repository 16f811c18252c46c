namespace Dispatch.TlsDispatcher.Tls;

/// <summary>A TLS failure: the alert we sent or received (if any) and BouncyCastle's reason.</summary>
public sealed class BcTlsException : IOException
{
    /// <summary>Creates the exception.</summary>
    public BcTlsException(string message, byte? alertSent, byte? alertReceived, Exception? innerException)
        : base(message, innerException)
    {
        AlertSent = alertSent;
        AlertReceived = alertReceived;
    }

    /// <summary>Creates the exception.</summary>
    public BcTlsException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public BcTlsException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public BcTlsException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The alert description we sent (its bytes are waiting in the session's output), if any.</summary>
    public byte? AlertSent { get; }

    /// <summary>The fatal alert description the peer sent, if any.</summary>
    public byte? AlertReceived { get; }
}
