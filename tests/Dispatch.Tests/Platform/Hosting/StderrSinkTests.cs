using System.Net.Sockets;
using System.Text;
using Dispatch.Platform.Hosting;
using Dispatch.Platform.Interop;
using Serilog;
using Xunit;

namespace Dispatch.Tests.Platform.Hosting;

public sealed class StderrSinkTests
{
    [Fact]
    public void Each_event_is_written_whole_as_the_child_formatter_makes_it()
    {
        var (ours, theirs) = Pair();
        using (theirs)
        using (var log = new LoggerConfiguration().WriteTo.Sink(new StderrSink(new ChildLogFormatter(), (int)ours.Handle)).CreateLogger())
        {
            log.Warning("Refused {Count} connection(s) from {Address}", 3, "192.0.2.7");
            log.Information("second line: é");
            ours.Shutdown(SocketShutdown.Send);

            var lines = ReadAll(theirs).Split('\n', StringSplitOptions.RemoveEmptyEntries);

            Assert.Equal(2, lines.Length);
            var (message, properties) = ChildLogFormatter.Split(lines[0]);
            Assert.Equal("WRN Refused 3 connection(s) from 192.0.2.7", message);
            Assert.Equal("192.0.2.7", properties.Single(p => p.Key == "Address").Value);
            Assert.StartsWith("INF second line: é", lines[1], StringComparison.Ordinal);
        }

        ours.Dispose();
    }

    [Fact]
    public async Task Lines_from_many_threads_never_interleave_and_a_long_one_arrives_whole()
    {
        var (ours, theirs) = Pair();
        using var _ = ours;
        using var __ = theirs;
        var reading = Task.Run(() => ReadAll(theirs));
        var sink = new StderrSink(new ChildLogFormatter(), (int)ours.Handle);
        using (var log = new LoggerConfiguration().WriteTo.Sink(sink).CreateLogger())
        {
            // More than the socket buffer holds: the writers block, and go on as the reader drains.
            await Task.WhenAll(Enumerable.Range(0, 4).Select(t => Task.Run(() =>
            {
                for (var i = 0; i < 200; i++)
                    log.Information("thread {Thread} line {Line} {Padding}", t, i, new string((char)('a' + t), 500));
            })));
            log.Information("long {Text}", new string('z', 100_000));
        }

        ours.Shutdown(SocketShutdown.Send);
        var lines = (await reading).Split('\n', StringSplitOptions.RemoveEmptyEntries);

        Assert.Equal(801, lines.Length);
        foreach (var line in lines[..800])
        {
            var (message, _) = ChildLogFormatter.Split(line);
            var t = message.Split(' ')[2];
            Assert.EndsWith(new string((char)('a' + int.Parse(t, System.Globalization.CultureInfo.InvariantCulture)), 500), message, StringComparison.Ordinal);
        }

        Assert.Equal("INF long " + new string('z', 100_000), ChildLogFormatter.Split(lines[800]).Text);
    }

    [Fact]
    public void A_reader_that_is_gone_loses_the_line_and_nothing_else()
    {
        var (ours, theirs) = Pair();
        theirs.Dispose();
        using var _ = ours;
        using var log = new LoggerConfiguration().WriteTo.Sink(new StderrSink(new ChildLogFormatter(), (int)ours.Handle)).CreateLogger();

        log.Warning("nobody reads this"); // EPIPE: no exception, no signal (the runtime ignores SIGPIPE)
        log.Warning("nor this");
    }

    private static unsafe (Socket Ours, Socket Theirs) Pair()
    {
        var fds = stackalloc int[2];
        Assert.Equal(0, Libc.SocketPair(1 /* AF_UNIX */, 1 /* SOCK_STREAM */ | 0x80000 /* SOCK_CLOEXEC */, 0, fds));
        return (new Socket(new SafeSocketHandle(fds[0], ownsHandle: true)), new Socket(new SafeSocketHandle(fds[1], ownsHandle: true)));
    }

    private static string ReadAll(Socket socket)
    {
        var all = new MemoryStream();
        var buffer = new byte[65536];
        int n;
        while ((n = socket.Receive(buffer)) > 0)
            all.Write(buffer, 0, n);
        return Encoding.UTF8.GetString(all.ToArray());
    }
}
