using System.Net.Sockets;
using System.Text;
using Dispatch.Protocol.Hosting;
using Dispatch.Protocol.Interop;
using Dispatch.Protocol.Wire;
using Serilog;
using Serilog.Events;

namespace Dispatch.Master.Children;

/// <summary>A child the master started: its pid, its channel, its stderr, and how it ended.</summary>
internal sealed class ChildProcess : IDisposable
{
    private readonly TaskCompletionSource<int> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ChildProcess(ProcessRole role, string name, int pid, uint uid, IpcChannel channel)
    {
        Role = role;
        Name = name;
        Pid = pid;
        Uid = uid;
        Channel = channel;
    }

    public ProcessRole Role { get; }

    /// <summary>"dispatcher" or the pool's name.</summary>
    public string Name { get; }

    public int Pid { get; }

    public uint Uid { get; }

    public IpcChannel Channel { get; }

    public DateTime Started { get; } = DateTime.UtcNow;

    /// <summary>Completes with the wait status when the reaper collects the child.</summary>
    public Task<int> Exited => _exited.Task;

    public void MarkExited(int status) => _exited.TrySetResult(status);

    public void Kill(int signal = Libc.SIGKILL)
    {
        if (!Exited.IsCompleted)
            Libc.Kill(Pid, signal);
    }

    public static string DescribeStatus(int status)
    {
        var sig = status & 0x7f;
        return sig == 0 ? $"exit code {(status >> 8) & 0xff}" : $"signal {sig}";
    }

    public override string ToString() => $"{Role} {Pid} ({Name})";

    public void Dispose() => Channel.Dispose();
}

/// <summary>Collects every child's exit status (waitpid(-1) on one thread) and hands it to its ChildProcess.</summary>
internal sealed unsafe class Reaper : IDisposable
{
    private readonly Dictionary<int, ChildProcess> _children = [];
    private readonly Dictionary<int, int> _early = [];
    private readonly Lock _gate = new();
    private readonly SemaphoreSlim _spawned = new(0);
    private readonly Action<ChildProcess, int> _onExit;

    public Reaper(Action<ChildProcess, int> onExit)
    {
        _onExit = onExit;
        new Thread(Run) { IsBackground = true, Name = "reaper" }.Start();
    }

    /// <summary>Registers a child just spawned (possibly already exited: its status is then kept until now).</summary>
    public void Track(ChildProcess child)
    {
        int status;
        lock (_gate)
        {
            if (!_early.Remove(child.Pid, out status))
            {
                _children[child.Pid] = child;
                _spawned.Release();
                return;
            }
        }

        child.MarkExited(status);
        _onExit(child, status);
    }

    public void Dispose() => _spawned.Dispose();

    private void Run()
    {
        while (true)
        {
            int status;
            var pid = Libc.WaitPid(-1, &status, 0);
            if (pid < 0)
            {
                if (Libc.LastError == Libc.ECHILD)
                {
                    try
                    {
                        _spawned.Wait(1000);
                    }
                    catch (ObjectDisposedException)
                    {
                        return; // The master is exiting.
                    }
                }

                continue;
            }

            ChildProcess? child;
            lock (_gate)
            {
                if (!_children.Remove(pid, out child))
                    _early[pid] = status;
            }

            if (child is not null)
            {
                child.MarkExited(status);
                _onExit(child, status);
            }
        }
    }
}

/// <summary>Reads a child's stderr (a stream socket) and re-logs each line with the child's role and pid.</summary>
internal static class StderrPump
{
    private const int MaxLine = 4096;

    /// <summary>
    /// Lines being re-logged now, over every child: the master's <see cref="MemoryTrim"/> reads
    /// it as its load (the children's log lines are most of what the master allocates while they serve connections).
    /// </summary>
    public static ConnectionGauge Lines { get; } = new();

    /// <summary>
    /// One line of at most <see cref="MaxLine"/> characters; the rest of a longer line is read and dropped,
    /// so a child writing without line breaks cannot make the master buffer without end. Null at end of stream.
    /// </summary>
    private static async Task<string?> ReadBoundedLineAsync(StreamReader reader)
    {
        var line = new StringBuilder();
        var one = new char[1];
        var truncated = false;
        while (true)
        {
            if (await reader.ReadAsync(one.AsMemory()).ConfigureAwait(false) == 0)
                return line.Length == 0 && !truncated ? null : line.ToString();
            var c = one[0];
            if (c == '\n')
                return truncated ? line.Append('…').ToString() : line.ToString();
            if (line.Length < MaxLine)
                line.Append(c);
            else
                truncated = true;
        }
    }

    public static async Task RunAsync(int fd, ProcessRole role, string name, Func<int> pid, ILogger log)
    {
        using var socket = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
        using var stream = new NetworkStream(socket, ownsSocket: false);
        using var reader = ChildLogFormatter.OpenReader(stream);
        try
        {
            while (await ReadBoundedLineAsync(reader).ConfigureAwait(false) is { } line)
            {
                var (level, text) = line.Length > 4 && line[3] == ' ' ? line[..3] switch
                {
                    "VRB" => (LogEventLevel.Verbose, line[4..]),
                    "DBG" => (LogEventLevel.Debug, line[4..]),
                    "INF" => (LogEventLevel.Information, line[4..]),
                    "WRN" => (LogEventLevel.Warning, line[4..]),
                    "ERR" => (LogEventLevel.Error, line[4..]),
                    "FTL" => (LogEventLevel.Fatal, line[4..]),
                    _ => (LogEventLevel.Warning, line),
                } : (LogEventLevel.Warning, line);
                Lines.Enter();
                try
                {
                    var (message, properties) = ChildLogFormatter.Split(text);
                    var withProperties = log;
                    foreach (var (key, value) in properties)
                    {
                        // The child's own properties (Vhost, Pool, ConnectionId...), never in place of the master's.
                        if (key is not ("Role" or "Pid" or "Name" or "Line"))
                            withProperties = withProperties.ForContext(key, value);
                    }

                    withProperties.Write(level, "{Role} {Pid} ({Name}): {Line}", role, pid(), name, message);
                }
                finally
                {
                    Lines.Leave();
                }
            }
        }
        catch (IOException)
        {
        }
    }
}
