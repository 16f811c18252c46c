using Dispatch.Wire.Payloads;

namespace Dispatch.Master.Config;

/// <summary>Extra paths each jailed process must prove it cannot open, and on how many threads.</summary>
internal sealed record JailProbeConfig(ValueList<string> Paths, int Threads);
