using System.Runtime.InteropServices;
using Dispatch.Platform.Interop;

namespace Dispatch.Tests.Platform.Interop;

/// <summary>The architecture guard: x86_64 runs, every other architecture is refused with a message that says why.</summary>
public class NativeLayoutTests
{
    [Fact]
    public void X64_is_supported()
    {
        Assert.Null(NativeLayout.Unsupported(Architecture.X64));
    }

    [Theory]
    [InlineData(Architecture.Arm64)]
    [InlineData(Architecture.Arm)]
    [InlineData(Architecture.X86)]
    [InlineData(Architecture.RiscV64)]
    [InlineData(Architecture.LoongArch64)]
    [InlineData(Architecture.S390x)]
    [InlineData(Architecture.Ppc64le)]
    public void Every_other_architecture_is_refused_naming_it_and_the_layouts(Architecture architecture)
    {
        var why = NativeLayout.Unsupported(architecture);
        Assert.NotNull(why);
        Assert.Contains(architecture.ToString(), why, StringComparison.Ordinal);
        Assert.Contains("x86_64", why, StringComparison.Ordinal);
        Assert.Contains("struct stat", why, StringComparison.Ordinal);
    }

    [Fact]
    public unsafe void The_layouts_match_this_x86_64_machine()
    {
        Assert.Equal(Architecture.X64, RuntimeInformation.ProcessArchitecture);
        Assert.Null(NativeLayout.Unsupported());
        Assert.Equal(144, sizeof(Libc.Stat));
        Assert.Equal(12, sizeof(Libc.EpollEvent));

        // The fields read from a real stat: / is a directory owned by root.
        Libc.Stat st;
        Assert.Equal(0, Libc.LStat("/", &st));
        Assert.Equal(Libc.S_IFDIR, st.Mode & Libc.S_IFMT);
        Assert.Equal(0u, st.Uid);
    }
}
