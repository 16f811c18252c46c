using Dispatch.Protocol.Interop;
using Dispatch.Protocol.Wire;

namespace Dispatch.Tests.Protocol;

public class IpcChannelTests
{
    [Fact]
    public async Task A_message_and_its_descriptor_arrive_intact()
    {
        using var a = IpcChannel.CreatePair("b", out var bFd);
        using var b = IpcChannel.FromDescriptor(bFd, "a");
        var (x, y) = IpcChannel.RawPair(Libc.SOCK_STREAM);
        try
        {
            var receive = b.ReceiveAsync().AsTask();
            a.Send(new WorkerReady(7, "pool-a", 42, 4242), [x]);
            using var message = await receive.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.NotNull(message);
            var ready = message.Decode<WorkerReady>();
            Assert.Equal(new WorkerReady(7, "pool-a", 42, 4242), ready);
            Assert.Equal(1, message.Descriptors.Count);
            var fd = message.Descriptors.Take(0);
            Assert.Equal(Libc.FD_CLOEXEC, Libc.Fcntl(fd, Libc.F_GETFD, 0) & Libc.FD_CLOEXEC);
            Libc.Close(fd);
        }
        finally
        {
            Libc.Close(x);
            Libc.Close(y);
        }
    }

    [Fact]
    public async Task Peer_closing_reads_as_null()
    {
        using var a = IpcChannel.CreatePair("b", out var bFd);
        Libc.Close(bFd);
        Assert.Null(await a.ReceiveAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
    }
}
