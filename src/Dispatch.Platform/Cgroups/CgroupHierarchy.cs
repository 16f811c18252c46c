namespace Dispatch.Platform.Cgroups;

/// <summary>One mounted cgroup hierarchy, and where this process sits in it.</summary>
/// <param name="MountPoint">Where it is mounted, e.g. /sys/fs/cgroup or /sys/fs/cgroup/memory.</param>
/// <param name="MountRoot">The group mounted there (a path inside the hierarchy; "/" but in cgroup namespaces).</param>
/// <param name="IsV2">cgroup2 (unified) rather than a v1 hierarchy.</param>
/// <param name="Controllers">v1: the controllers bound to it; v2: those listed in cgroup.controllers at the mount.</param>
/// <param name="OwnGroup">This process's group in the hierarchy (/proc/self/cgroup).</param>
public sealed record CgroupHierarchy(string MountPoint, string MountRoot, bool IsV2, IReadOnlyList<string> Controllers, string OwnGroup)
{
    /// <summary>The directory of a group (a path inside the hierarchy); null when that group is not under what is mounted.</summary>
    public string? DirectoryOf(string group)
    {
        if (!group.StartsWith('/') || group.Split('/').Any(c => c is "." or ".."))
            return null;
        var root = MountRoot.TrimEnd('/');
        if (root.Length > 0 && group != root && !group.StartsWith(root + "/", StringComparison.Ordinal))
            return null;
        var rest = group[root.Length..].TrimStart('/');
        return rest.Length == 0 ? MountPoint : Path.Combine(MountPoint, rest);
    }

    public override string ToString() =>
        $"{(IsV2 ? "cgroup2" : "cgroup v1")} at {MountPoint} ({(Controllers.Count == 0 ? "no controllers" : string.Join(" ", Controllers))})";
}
