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
}
