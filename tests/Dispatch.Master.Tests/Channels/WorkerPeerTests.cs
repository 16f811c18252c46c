using Dispatch.Master.Channels;
using Dispatch.Master.Children;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Serilog;
using Serilog.Core;
using Serilog.Events;

namespace Dispatch.Master.Tests.Channels;

public class WorkerPeerTests
{
    // The reaper disposes a worker's channel when it collects the worker; the receive the watch was waiting in then
    // fails with ECANCELED. Seen in CI as "Watch of worker N failed: Operation canceled", an Error for a clean exit.
    [Fact]
    public async Task A_channel_closed_under_the_watch_ends_it_quietly()
    {
        var channel = IpcChannel.CreatePair("worker", out var workerEnd);
        try
        {
            using var worker = new ChildProcess(ProcessRole.Worker, "pool", 12345, 65534, channel);
            var sink = new CollectingSink();
            var log = new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.Sink(sink).CreateLogger();
            var watch = WorkerPeer.WatchAsync(worker, log, CancellationToken.None);
            Assert.False(watch.IsCompleted);
            worker.Dispose();
            await watch;
            Assert.Empty(sink.Events);
        }
        finally
        {
            Libc.Close(workerEnd);
        }
    }
}
