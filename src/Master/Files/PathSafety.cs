using Dispatch.Platform.Interop;

namespace Dispatch.Master.Files;

/// <summary>
/// Checks on paths root depends on: every component of the real path owned by root and writable by
/// no one else (so no other uid can swap what root executes or hands to a jailed process), and
/// traversable by the uids that must load from it after their drop.
/// </summary>
internal static unsafe class PathSafety
{
    /// <summary>Null when safe, otherwise the reason naming the offending component.</summary>
    public static string? CheckRootOwned(string path)
    {
        var real = RealPath(path);
        foreach (var component in PathComponents.Of(real))
        {
            Libc.Stat st;
            if (Libc.LStat(component, &st) != 0)
                return $"{component}: {Libc.Describe(Libc.LastError)}";
            if (st.Uid != 0)
                return $"{component} is owned by uid {st.Uid}, not root";
            if ((st.Mode & 0x12) != 0) // group or other write
                return $"{component} is writable by {((st.Mode & 0x2) != 0 ? "everyone" : $"group {st.Gid}")} (mode {Convert.ToString(st.Mode & 0xFFF, 8)})";
        }

        return null;
    }

    /// <summary>Null when <paramref name="uid"/> (with <paramref name="gids"/>) can traverse every directory of the path.</summary>
    public static string? CheckTraversable(string path, uint uid, IReadOnlyCollection<uint> gids)
    {
        var real = RealPath(path);
        foreach (var component in PathComponents.Of(real))
        {
            Libc.Stat st;
            if (Libc.LStat(component, &st) != 0)
                return $"{component}: {Libc.Describe(Libc.LastError)}";
            if ((st.Mode & Libc.S_IFMT) != Libc.S_IFDIR)
                continue;
            uint bits = st.Uid == uid ? (st.Mode >> 6) & 7 : gids.Contains(st.Gid) ? (st.Mode >> 3) & 7 : st.Mode & 7;
            if ((bits & 1) == 0)
                return $"uid {uid} cannot traverse {component} (owner {st.Uid}, group {st.Gid}, mode {Convert.ToString(st.Mode & 0xFFF, 8)})";
        }

        return null;
    }

    public static string RealPath(string path)
    {
        var full = Path.GetFullPath(path);
        // Resolve symlinks component by component.
        var parts = full.Split('/', StringSplitOptions.RemoveEmptyEntries);
        var current = "/";
        for (var i = 0; i < parts.Length; i++)
        {
            var next = Path.Combine(current, parts[i]);
            var fi = new FileInfo(next);
            if (fi.LinkTarget is not null)
            {
                var target = fi.ResolveLinkTarget(returnFinalTarget: true);
                next = target?.FullName ?? next;
            }

            current = next;
        }

        return current;
    }
}
