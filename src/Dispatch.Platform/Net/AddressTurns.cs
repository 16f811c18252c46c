namespace Dispatch.Platform.Net;

/// <summary>
/// The rule by which a process that serves many clients gives turns to work that waits: a client address with fewer
/// than <see cref="LightBelow"/> connections open (a visitor; a browser opens six) goes before one with more (a flood, a
/// big NAT), <see cref="LightPerHeavy"/> turns to one while both wait, so that the heavy ones still move. The worker's
/// admission of new connections and the dispatcher's steps on its thread pool both follow it (docs/floods.md).
/// </summary>
public static class AddressTurns
{
    /// <summary>Fewer connections than this open from an address: its turns come first.</summary>
    public const int LightBelow = 8;

    /// <summary>Turns of light addresses before one of a heavy address, when both wait.</summary>
    public const int LightPerHeavy = 4;

    /// <summary>
    /// Whether the next turn is a heavy address's: one waits, and either no light one does or
    /// <see cref="LightPerHeavy"/> light turns in a row went before it.
    /// </summary>
    public static bool HeavyNext(bool lightWaits, bool heavyWaits, int lightInARow) =>
        heavyWaits && (!lightWaits || lightInARow >= LightPerHeavy);
}
