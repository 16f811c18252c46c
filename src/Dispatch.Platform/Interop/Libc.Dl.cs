using System.Runtime.InteropServices;

namespace Dispatch.Platform.Interop;

/// <summary>The dynamic loader (in libc since glibc 2.34): for native privilege modules.</summary>
public static unsafe partial class Libc
{
    public const int RTLD_NOW = 2;
    public const int RTLD_LOCAL = 0;

    [LibraryImport(Lib, EntryPoint = "dlopen", StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint DlOpen(string file, int mode);

    [LibraryImport(Lib, EntryPoint = "dlsym", StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint DlSym(nint handle, string name);

    [LibraryImport(Lib, EntryPoint = "dlerror")]
    private static partial byte* DlErrorRaw();

    /// <summary>The loader's last error (and clears it), or a fallback when it has none.</summary>
    public static string DlError() => Marshal.PtrToStringUTF8((nint)DlErrorRaw()) ?? "no error reported by the dynamic loader";
}
