using Dispatch.Master.Children;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Serilog;
using Serilog.Events;

namespace Dispatch.Fuzz;

/// <summary>
/// The master's reader of a child's stderr (StderrPump, with ChildLogFormatter.Split), fed bytes a compromised child
/// writes: a real stream socketpair, the bytes written and the end closed, the pump run to the end, every event
/// rendered by the master's own formatters. Documented: a child is less trusted than the master; one event per line
/// (lines cut at 4096 characters), malformed properties kept as text, never the master's Role ("Worker")/Pid/Name; the pump
/// ends at end of stream without throwing. A line of the child's must not become two lines of the master's log.
/// </summary>
internal sealed class ChildStderrTarget : IFuzzTarget
{
    private const int ChildPid = 4242;
    private readonly CapturingSink _sink = new();
    private readonly ILogger _log;

    public ChildStderrTarget() =>
        _log = new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.Sink(_sink).CreateLogger();

    public string Name => "childstderr";

    public string Description => "the master's StderrPump + ChildLogFormatter.Split on what a child writes to stderr";

    public void Run(ReadOnlySpan<byte> data)
    {
        data = data[..Math.Min(data.Length, 64 * 1024)];
        _sink.Clear();
        var (ours, child) = IpcChannel.RawPair(Libc.SOCK_STREAM);
        var bytes = data.ToArray();
        var writer = Task.Run(() => WriteAndClose(child, bytes));
        StderrPump.RunAsync(ours, ProcessRole.Worker, "pool p", () => ChildPid, _log).GetAwaiter().GetResult();
        writer.GetAwaiter().GetResult();

        var lines = Math.Max(1, bytes.Count(b => b == (byte)'\n') + (bytes.Length > 0 && bytes[^1] != (byte)'\n' ? 1 : 0));
        if (bytes.Length > 0 && _sink.Events.Count != lines)
            throw new FuzzFindingException($"{lines} line(s) written, {_sink.Events.Count} event(s) logged");
        foreach (var e in _sink.Events)
        {
            if (!Is(e, "Role", nameof(ProcessRole.Worker)) || !Is(e, "Pid", ChildPid) || !Is(e, "Name", "pool p"))
                throw new FuzzFindingException($"the child replaced the master's properties: {string.Join(", ", e.Properties.Select(p => $"{p.Key}={p.Value}"))}");
        }

        foreach (var line in _sink.TextLines)
        {
            var body = line.AsSpan(0, line.Length - Environment.NewLine.Length);
            if (body.IndexOfAny("\r\n\u0085\u2028\u2029") >= 0)
                throw new FuzzFindingException($"one line of the child's became several lines of the master's log: {line.ReplaceLineEndings("⏎")}");
        }
    }

    private static bool Is(LogEvent e, string name, object expected) =>
        e.Properties.TryGetValue(name, out var v) && v is ScalarValue s && Equals(s.Value, expected);

    private static unsafe void WriteAndClose(int fd, byte[] bytes)
    {
        try
        {
            fixed (byte* p = bytes)
            {
                var done = 0;
                while (done < bytes.Length)
                {
                    var n = Libc.Write(fd, p + done, (nuint)(bytes.Length - done));
                    if (n <= 0)
                        throw new InvalidOperationException($"write to the child's stderr failed: {Libc.Describe(Libc.LastError)}");
                    done += (int)n;
                }
            }
        }
        finally
        {
            Libc.Close(fd);
        }
    }
}
