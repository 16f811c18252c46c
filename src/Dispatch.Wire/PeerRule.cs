namespace Dispatch.Wire;

/// <summary>One row of a channel end's table: messages of <paramref name="Type"/> are accepted in these phases.</summary>
public sealed record PeerRule(MessageType Type, IReadOnlyList<PeerPhase> Phases);
