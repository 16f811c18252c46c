using Dispatch.Platform.Interop;
using Dispatch.Wire;

namespace Dispatch.Tests.Wire.Messages;

/// <summary>
/// WorkerSetup, LogFiles and ErrorLogFiles (Messages/MasterWorker.cs): the inline pool configuration's one limit at both
/// ends, and a vhost named twice, or a name that is none, refused at decode time.
/// </summary>
public class MasterWorkerTests
{
    private const int Max = WorkerSetup.MaxInlineJson;

    /// <summary>The decoder accepts the largest blob the master inlines and refuses one byte more (it accepted 60000).</summary>
    [Fact]
    public void The_decoder_takes_an_inline_pool_configuration_up_to_the_limit_the_master_inlines_and_no_more()
    {
        Assert.Equal(Max, WireBytes.Decode<WorkerSetup>(WireBytes.Of(Setup(Max, []))).PoolJson.Length);
        Assert.Empty(WireBytes.Decode<WorkerSetup>(WireBytes.Of(Setup(0, []))).PoolJson);
        WireBytes.Refused<WorkerSetup>(WireBytes.Of(Setup(Max + 1, [])), $"blob of {Max + 1} bytes exceeds its {Max}-byte limit");
        WireBytes.Refused<WorkerSetup>(WireBytes.Of(Setup(60000, [])), $"blob of 60000 bytes exceeds its {Max}-byte limit");
    }

    [Fact]
    public void The_master_inlines_up_to_the_limit_and_puts_more_in_a_memfd()
    {
        Assert.True(WorkerSetup.Inline("a", Max, []));
        Assert.True(WorkerSetup.Inline("a", 0, ["/etc/passwd"]));
        Assert.False(WorkerSetup.Inline("a", Max + 1, []));
        Assert.False(WorkerSetup.Inline("a", 60000, []));
    }

    /// <summary>
    /// At the limit the rest of the message must still fit the datagram: with probe paths that fill it to the last byte
    /// the configuration goes inline, and the datagram is sent and decoded; one byte more and it goes in the memfd,
    /// where inline it could not have been sent at all.
    /// </summary>
    [Fact]
    public async Task A_configuration_goes_inline_only_when_the_whole_datagram_fits()
    {
        // Header 8, pool "a" 2+1, worker id 4, blob 4+Max, probe count 2, probe threads 4, log messages 4: 16,355 bytes
        // left of the 65,536 for the probes, 2 + length each.
        var left = IpcChannel.MaxDatagram - (IpcChannel.HeaderSize + 2 + 1 + 4 + 4 + Max + 2 + 4 + 4);
        var full = new string('p', 4096);
        string[] fits = ["/" + full[1..], "/" + full[1..], "/" + full[1..], "/" + new string('q', left - (3 * 4098) - 3)];
        Assert.Equal(left, fits.Sum(p => 2 + p.Length));
        string[] over = [.. fits[..3], fits[3] + "r"];

        Assert.True(WorkerSetup.Inline("a", Max, fits));
        Assert.False(WorkerSetup.Inline("a", Max, over));
        Assert.True(WorkerSetup.Inline("a", Max - 1, over));

        using var master = IpcChannel.CreatePair("worker", out var workerFd);
        using var worker = IpcChannel.FromDescriptor(workerFd, "master");
        var (a, b) = IpcChannel.RawPair(Libc.SOCK_SEQPACKET);
        try
        {
            master.Send(Setup(Max, fits), [a]);
            using var received = await worker.ReceiveAsync();
            Assert.NotNull(received);
            var setup = received.Decode<WorkerSetup>();
            Assert.Equal((Max, fits.Length), (setup.PoolJson.Length, setup.ProbePaths.Length));
            var e = Assert.Throws<WireException>(() => master.Send(Setup(Max, over), [a]));
            Assert.Contains("does not fit", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            Libc.Close(a);
            Libc.Close(b);
        }
    }

    [Fact]
    public void A_worker_setup_with_more_probe_path_bytes_than_a_proof_holds_is_refused()
    {
        var atLimit = MasterDispatcherTests.ProbePaths(JailProof.MaxProbeBytes);
        Assert.Equal(atLimit, WireBytes.Decode<WorkerSetup>(WireBytes.Of(Setup(0, atLimit))).ProbePaths);
        WireBytes.Refused<WorkerSetup>(WireBytes.Of(Setup(0, [.. atLimit, "/"])), $"WorkerSetup probe paths: {JailProof.MaxProbeBytes + 1} bytes in all exceed the limit of {JailProof.MaxProbeBytes}");
    }

    private static WorkerSetup Setup(int jsonLength, string[] probes) => new("a", 7, new byte[jsonLength], probes, 4, 0);

    [Fact]
    public void Log_files_naming_a_vhost_twice_are_refused()
    {
        Assert.Equal(["a.localhost", "b.localhost"], WireBytes.Decode<LogFiles>(WireBytes.Of(new LogFiles(["a.localhost", "b.localhost"]))).Vhosts);
        WireBytes.Refused<LogFiles>(WireBytes.Of(new LogFiles(["a.localhost", "b.localhost", "a.localhost"])), "LogFiles vhosts[2]: 'a.localhost' is already vhosts[0]");
        WireBytes.Refused<ErrorLogFiles>(WireBytes.Of(new ErrorLogFiles(["b.localhost", "b.localhost"])), "ErrorLogFiles vhosts[1]: 'b.localhost' is already vhosts[0]");
    }

    /// <summary>Each name is a vhost's (a host name or wildcard, <c>HostNames.IsValidPattern</c>): a file under another is refused.</summary>
    [Fact]
    public void Log_files_naming_what_is_no_host_name_are_refused()
    {
        Assert.Equal(["*.c.localhost", "a.localhost"], WireBytes.Decode<ErrorLogFiles>(WireBytes.Of(new ErrorLogFiles(["*.c.localhost", "a.localhost"]))).Vhosts);
        WireBytes.Refused<LogFiles>(WireBytes.Of(new LogFiles(["a.localhost", "../a.localhost"])), "LogFiles vhosts[1]: '../a.localhost' is not a valid host name or '*.' wildcard (labels of");
        WireBytes.Refused<ErrorLogFiles>(WireBytes.Of(new ErrorLogFiles([string.Empty])), "ErrorLogFiles vhosts[0]: '' is not a valid host name");
        WireBytes.Refused<LogFiles>(WireBytes.Of(new LogFiles(["a.localhost:80"])), "LogFiles vhosts[0]: 'a.localhost:80' is not a valid host name");
    }
}
