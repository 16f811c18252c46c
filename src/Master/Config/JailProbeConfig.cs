using Dispatch.Wire;
using Dispatch.Wire.Payloads;

namespace Dispatch.Master.Config;

/// <summary>Extra paths each jailed process must prove it cannot open, and on how many threads.</summary>
internal sealed record JailProbeConfig(ValueList<string> Paths, int Threads)
{
    /// <summary>
    /// The most <c>jailProbe.paths</c>: what a child's probe list holds (<see cref="JailProof.MaxProbes"/>, refused
    /// beyond by the child's decoder) less what the master adds itself (<see cref="Children.JailSpecs.MaxOwnProbes"/>).
    /// </summary>
    public const int MaxPaths = JailProof.MaxProbes - Children.JailSpecs.MaxOwnProbes;

    /// <summary>The most bytes (UTF-8) of one of <c>jailProbe.paths</c>: what the children's decoders take of a path.</summary>
    public const int MaxPathBytes = JailProof.MaxProbePathBytes;

    /// <summary>
    /// The most bytes (UTF-8) of <c>jailProbe.paths</c> together: a fixed share of what a probe list holds
    /// (<see cref="JailProof.MaxProbeBytes"/>, what the set-up messages and the proof fit in a datagram with), the rest
    /// the master's own probes' (<see cref="Children.JailSpecs.MaxOwnProbeBytes"/>); fixed, so that adding a tenant never
    /// makes a good config bad.
    /// </summary>
    public const int MaxTotalBytes = 16 * 1024;
}
