using System.Globalization;
using Dispatch.Platform.Interop;

namespace Dispatch.Platform.Modules;

/// <summary>
/// Loads a third-party privilege module (a native shared library, see <see cref="PrivilegeModule"/>)
/// as root without being steered by anyone else: every component of its path owned by root, writable
/// by no one else and no symbolic link; the file opened with O_NOFOLLOW and checked again on the open
/// descriptor (a root-owned regular file writable only by root); then the dynamic loader maps that very
/// descriptor through <c>/proc/self/fd/N</c>, so what is loaded is what was checked (no second lookup
/// of the path). Both symbols are resolved at load (RTLD_NOW).
/// <para>
/// A library is never unloaded (a NativeAOT runtime cannot be), and its descriptor stays open as long
/// as the process lives: glibc recognises an object already loaded by the name it was opened with, so
/// a descriptor number closed and reused for another library would silently return the first one.
/// The same file (device and inode, unique while it is mapped) loaded again is the mapping already
/// there, found here without asking the loader; a replaced file is a new library.
/// </para>
/// </summary>
public static unsafe class ModuleLoader
{
    private static readonly Dictionary<(ulong Dev, ulong Ino), (nint Validate, nint Apply)> Loaded = [];
    private static readonly Lock Gate = new();

    public static PrivilegeModule Load(string libraryPath)
    {
        if (!Path.IsPathRooted(libraryPath))
            throw new ModuleException($"{libraryPath}: not an absolute path");
        foreach (var component in PathComponents.Of(Path.GetFullPath(libraryPath)))
        {
            Libc.Stat st;
            if (Libc.LStat(component, &st) != 0)
                throw new ModuleException($"{component}: {Libc.Describe(Libc.LastError)}");
            if ((st.Mode & Libc.S_IFMT) == Libc.S_IFLNK)
                throw new ModuleException($"{component} is a symbolic link; module paths must not contain any");
            if (st.Uid != 0)
                throw new ModuleException($"{component} is owned by uid {st.Uid}, not root");
            if ((st.Mode & 0x12) != 0)
                throw new ModuleException($"{component} is writable by group or others (mode {Convert.ToString(st.Mode & 0xFFF, 8)})");
        }

        var fd = Libc.Open(libraryPath, Libc.O_RDONLY | Libc.O_CLOEXEC | Libc.O_NOFOLLOW, 0);
        if (fd < 0)
            throw new ModuleException($"{libraryPath}: {Libc.Describe(Libc.LastError)}");
        var keep = false;
        try
        {
            Libc.Stat st;
            if (Libc.FStat(fd, &st) != 0 || (st.Mode & Libc.S_IFMT) != Libc.S_IFREG || st.Uid != 0 || (st.Mode & 0x12) != 0)
                throw new ModuleException($"{libraryPath}: changed under us, or not a root-owned regular file writable only by root");

            lock (Gate)
            {
                if (!Loaded.TryGetValue((st.Dev, st.Ino), out var exports))
                    exports = Loaded[(st.Dev, st.Ino)] = Map(fd, libraryPath, ref keep);
                if (exports.Validate == 0 || exports.Apply == 0)
                    throw new ModuleException($"{libraryPath}: exports no function '{(exports.Validate == 0 ? "validate" : "apply")}' (a module exports validate and apply, see docs/modules.md)");
                return new PrivilegeModule(libraryPath, exports.Validate, exports.Apply);
            }
        }
        finally
        {
            if (!keep)
                Libc.Close(fd);
        }
    }

    /// <summary>dlopen of the checked descriptor; the exports it lacks are 0 (remembered, so a reload does not map it again).</summary>
    private static (nint Validate, nint Apply) Map(int fd, string libraryPath, ref bool keep)
    {
        // The descriptor, not the path: /proc/self/fd/N is the open file itself.
        var handle = Libc.DlOpen(string.Create(CultureInfo.InvariantCulture, $"/proc/self/fd/{fd}"), Libc.RTLD_NOW | Libc.RTLD_LOCAL);
        if (handle == 0)
            throw new ModuleException($"{libraryPath}: not a loadable shared library: {Libc.DlError()}");
        // From here on the name /proc/self/fd/N is the loader's for this library: N stays open.
        keep = true;
        return (Libc.DlSym(handle, "validate"), Libc.DlSym(handle, "apply"));
    }
}
