using Dispatch.Platform.Confinement;

namespace Dispatch.Tests.Platform.Confinement;

/// <summary>What the master says on a kernel whose Landlock has no network rules (ABI &lt; 4): this machine's kernel has them, so the decision is tested on its own.</summary>
public class LandlockWarningTests
{
    [Fact]
    public void Without_network_rules_the_warning_names_the_abi_and_the_ports_that_cannot_be_held()
    {
        Assert.Null(Landlock.NetworkWarning(4, [5432]));
        Assert.Null(Landlock.NetworkWarning(7, []));
        var warning = Landlock.NetworkWarning(3, [5432, 8081]);
        Assert.Equal("Landlock ABI 3 has no network rules (ABI 4, Linux 6.7, needed): TCP connect was to be limited to port(s) 5432, 8081, but TCP bind and connect are NOT restricted on this kernel", warning);
        Assert.Contains("no TCP port is listed", Landlock.NetworkWarning(1, []), StringComparison.Ordinal);
    }
}
