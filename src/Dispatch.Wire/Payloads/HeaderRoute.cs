namespace Dispatch.Wire.Payloads;

/// <summary>A response header a vhost sets on every response (see <see cref="VhostWebRules.CheckHeader"/>).</summary>
public sealed record HeaderRoute(string Name, string Value);
