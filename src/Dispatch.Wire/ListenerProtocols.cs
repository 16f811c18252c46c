namespace Dispatch.Wire;

/// <summary>
/// What a listening socket handed to a dispatcher (<see cref="ListenerInfo.Protocol"/>) speaks: a
/// <see cref="DispatcherSetup"/> naming anything else is refused when it is decoded.
/// </summary>
public static class ListenerProtocols
{
    /// <summary>Plain HTTP: the request head's Host routes.</summary>
    public const string Http = "http";

    /// <summary>TLS: the ClientHello's SNI routes.</summary>
    public const string Tls = "tls";

    /// <summary>The Prometheus endpoint (config <c>metrics.listen</c>), answered by the dispatcher with the master's text.</summary>
    public const string Metrics = "metrics";

    public static IReadOnlyList<string> All { get; } = [Http, Tls, Metrics];
}
