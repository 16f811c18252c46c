namespace Dispatch.Worker.Http;

/// <summary>Why connecting to a proxy upstream failed (<see cref="UpstreamConnectException"/>).</summary>
internal enum ConnectFailure
{
    Refused,
    Missing,
    Denied,
    Timeout,
    Unavailable,
}
