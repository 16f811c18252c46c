namespace Dispatch.Master.Config;

/// <summary>Where the pools' cgroups go (a group path, absolute or relative to the master's own group) and whether limits the machine cannot apply are errors.</summary>
internal sealed record CgroupConfig(string Root, bool Required);
