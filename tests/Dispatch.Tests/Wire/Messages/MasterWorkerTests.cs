using Dispatch.Wire;

namespace Dispatch.Tests.Wire.Messages;

/// <summary>LogFiles and ErrorLogFiles (Messages/MasterWorker.cs): a vhost named twice is refused at decode time.</summary>
public class MasterWorkerTests
{
    [Fact]
    public void Log_files_naming_a_vhost_twice_are_refused()
    {
        Assert.Equal(["a.localhost", "b.localhost"], WireBytes.Decode<LogFiles>(WireBytes.Of(new LogFiles(["a.localhost", "b.localhost"]))).Vhosts);
        WireBytes.Refused<LogFiles>(WireBytes.Of(new LogFiles(["a.localhost", "b.localhost", "a.localhost"])), "LogFiles vhosts[2]: 'a.localhost' is already vhosts[0]");
        WireBytes.Refused<ErrorLogFiles>(WireBytes.Of(new ErrorLogFiles(["b.localhost", "b.localhost"])), "ErrorLogFiles vhosts[1]: 'b.localhost' is already vhosts[0]");
    }
}
