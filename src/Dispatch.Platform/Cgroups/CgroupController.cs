namespace Dispatch.Platform.Cgroups;

/// <summary>The controllers Dispatch sets limits with.</summary>
public enum CgroupController
{
    Memory,
    Cpu,
    Pids,
}
