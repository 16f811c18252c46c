using Dispatch.Platform.Interop;

namespace Dispatch.Master.Config;

/// <summary>User and group names through the C library (the master runs as root, before any jail).</summary>
internal static unsafe class Users
{
    public static bool TryGetUser(string name, out uint uid, out uint gid)
    {
        var buffer = stackalloc byte[16384];
        Libc.PasswdEntry entry;
        Libc.PasswdEntry* result;
        if (Libc.GetPwNamR(name, &entry, buffer, 16384, &result) == 0 && result != null)
        {
            uid = entry.Uid;
            gid = entry.Gid;
            return true;
        }

        uid = gid = 0;
        return false;
    }

    public static bool TryGetGroup(string name, out uint gid)
    {
        var buffer = stackalloc byte[16384];
        Libc.GroupEntry entry;
        Libc.GroupEntry* result;
        if (Libc.GetGrNamR(name, &entry, buffer, 16384, &result) == 0 && result != null)
        {
            gid = entry.Gid;
            return true;
        }

        gid = 0;
        return false;
    }
}
