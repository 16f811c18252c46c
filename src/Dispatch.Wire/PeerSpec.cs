namespace Dispatch.Wire;

/// <summary>
/// What one end of a channel accepts from the other: its rows (message type and phases). The exact
/// descriptor count of each type is the type's own (<see cref="IWireMessage{TSelf}.DescriptorCount"/>);
/// the handlers are bound by the process that owns the end (<see cref="PeerTable"/>).
/// </summary>
/// <param name="Name">The end, for messages: "master, from a dispatcher".</param>
/// <param name="Sender">Who sends on it, for messages: "the dispatcher".</param>
/// <param name="Rules">The accepted types, each at most once.</param>
public sealed record PeerSpec(string Name, string Sender, IReadOnlyList<PeerRule> Rules)
{
    /// <summary>Whether <paramref name="type"/> is accepted in <paramref name="phase"/>.</summary>
    public bool Allows(MessageType type, PeerPhase phase) => Rules.Any(r => r.Type == type && r.Phases.Contains(phase));

    public override string ToString() => Name;
}
