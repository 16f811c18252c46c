namespace Dispatch.Wire;

/// <summary>Where a channel end is in its life; each end accepts a fixed set of message types per phase (<see cref="Peers"/>).</summary>
public enum PeerPhase
{
    /// <summary>Before the peer said Ready (a child's start: Hello, JailProof, Ready; a child's setup messages from the master).</summary>
    Setup = 1,

    /// <summary>After Ready, until a stop.</summary>
    Serving = 2,

    /// <summary>A dispatcher told to stop (an upgrade, or the master exiting): it finishes what is open.</summary>
    Draining = 3,
}
