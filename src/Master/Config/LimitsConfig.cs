namespace Dispatch.Master.Config;

/// <summary>Machine-wide limits.</summary>
internal sealed record LimitsConfig(int MaxWorkers);
