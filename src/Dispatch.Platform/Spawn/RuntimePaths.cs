using System.Runtime.InteropServices;

namespace Dispatch.Platform.Spawn;

/// <summary>Where the runtime and our binaries live, as the jail needs to know them.</summary>
public static class RuntimePaths
{
    /// <summary>
    /// True in a NativeAOT image (what scripts/publish.sh ships): the executable holds its runtime, and
    /// no .NET install is read at all. False under the JIT (a framework-dependent build, the unit tests).
    /// </summary>
    public static bool IsNativeAot => !System.Runtime.CompilerServices.RuntimeFeature.IsDynamicCodeSupported;

    /// <summary>The .NET install root (the directory holding shared/ and host/); null in a NativeAOT image, which needs none.</summary>
    public static string? DotnetRoot
    {
        get
        {
            if (IsNativeAot)
                return null;
            // .../shared/Microsoft.NETCore.App/<version>/ → three levels up.
            var runtimeDir = RuntimeEnvironment.GetRuntimeDirectory().TrimEnd('/');
            return Path.GetFullPath(Path.Combine(runtimeDir, "..", "..", ".."));
        }
    }

    /// <summary>Where a child's code is loaded from: our binaries' directory, and under the JIT the .NET install root.</summary>
    public static string[] CodePaths => DotnetRoot is { } root ? [root, AppDirectory] : [AppDirectory];

    /// <summary>The directory of the running executables (all three are staged together).</summary>
    public static string AppDirectory => AppContext.BaseDirectory.TrimEnd('/');

    /// <summary>The ELF interpreter, which the kernel opens for execution on every exec.</summary>
    public static string ElfInterpreter
    {
        get
        {
            var info = new FileInfo("/lib64/ld-linux-x86-64.so.2");
            var target = info.ResolveLinkTarget(returnFinalTarget: true);
            return target?.FullName ?? info.FullName;
        }
    }
}
