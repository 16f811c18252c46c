namespace Dispatch.Wire.Tls;

/// <summary>
/// The peer broke the record protocol: the connection must end with the fatal alert <see cref="Alert"/>, for the
/// reason in <see cref="Exception.Message"/> (a short phrase fit for a log line; never key material).
/// </summary>
public sealed class TlsAlertException : Exception
{
    public TlsAlertException()
        : this(TlsAlertDescription.InternalError, "unspecified")
    {
    }

    public TlsAlertException(string message)
        : this(TlsAlertDescription.InternalError, message)
    {
    }

    public TlsAlertException(string message, Exception innerException)
        : base(message, innerException)
    {
        Alert = TlsAlertDescription.InternalError;
    }

    public TlsAlertException(TlsAlertDescription alert, string reason)
        : base(reason)
    {
        Alert = alert;
    }

    public TlsAlertException(TlsAlertDescription alert, string reason, Exception innerException)
        : base(reason, innerException)
    {
        Alert = alert;
    }

    /// <summary>The fatal alert to send before closing.</summary>
    public TlsAlertDescription Alert { get; }
}
