using System.Text;
using Dispatch.Master.Children;
using Dispatch.Wire;

namespace Dispatch.Master.Tests.Children;

/// <summary>An upgrade starts only binaries that speak this master's protocol, read from their stamp without running them.</summary>
public sealed class UpgradeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("upgrade-probe").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Binaries_of_this_protocol_may_be_started()
    {
        Install(IpcChannel.Version);

        Assert.Null(Upgrade.ProtocolMismatch(_dir));
    }

    [Fact]
    public void Binaries_of_another_protocol_need_a_restart_of_the_master()
    {
        Install((byte)(IpcChannel.Version + 1));

        var mismatch = Upgrade.ProtocolMismatch(_dir);

        Assert.Equal($"the installed binaries speak protocol {IpcChannel.Version + 1} and this master {IpcChannel.Version}: restart the master to run them (systemctl restart dispatch)", mismatch);
    }

    [Fact]
    public void Binaries_without_a_stamp_or_none_at_all_are_refused_saying_why()
    {
        Assert.StartsWith($"could not read the protocol version of {ProtocolStamp.CarrierIn(_dir)}: ", Upgrade.ProtocolMismatch(_dir), StringComparison.Ordinal);
        File.WriteAllBytes(ProtocolStamp.CarrierIn(_dir), Encoding.ASCII.GetBytes("no stamp in here"));
        Assert.StartsWith("the installed binaries speak protocol (unknown) and this master ", Upgrade.ProtocolMismatch(_dir), StringComparison.Ordinal);
    }

    private void Install(byte version) =>
        File.WriteAllBytes(ProtocolStamp.CarrierIn(_dir), [.. Encoding.ASCII.GetBytes("padding\0DispatchIpcProtocolVersion="), version, .. Encoding.ASCII.GetBytes("more")]);
}
