using System.Runtime.InteropServices;

namespace Dispatch.Platform.Interop;

/// <summary>
/// The native layer's struct layouts (<see cref="Libc.Stat"/>, <see cref="Libc.EpollEvent"/>, the sigaction offsets)
/// are those of x86_64 glibc; on another architecture they would read wrong fields. The master refuses to start there,
/// saying so, rather than read them.
/// </summary>
public static class NativeLayout
{
    /// <summary>Null on x86_64; otherwise why Dispatch cannot run on <paramref name="architecture"/>.</summary>
    public static string? Unsupported(Architecture architecture) => architecture == Architecture.X64
        ? null
        : $"Dispatch's native layer (Dispatch.Platform/Interop/Libc.cs: struct stat, struct epoll_event, struct sigaction) has the layouts of x86_64 Linux only, and this process runs on {architecture}: refusing to start rather than read wrong fields";

    /// <summary>The check for this process.</summary>
    public static string? Unsupported() => Unsupported(RuntimeInformation.ProcessArchitecture);
}
