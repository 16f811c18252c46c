namespace Dispatch.Worker.Http;

/// <summary>Connecting to the upstream failed (thrown by the connect callback, wrapped by the HTTP handler).</summary>
internal sealed class UpstreamConnectException(ConnectFailure failure, string message, Exception? inner) : IOException(message, inner)
{
    public ConnectFailure Failure { get; } = failure;
}
