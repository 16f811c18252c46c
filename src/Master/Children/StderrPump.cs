using System.Buffers;
using System.Collections.Concurrent;
using System.Net.Sockets;
using Dispatch.Platform.Hosting;
using Dispatch.Wire;
using Serilog;
using Serilog.Events;

namespace Dispatch.Master.Children;

/// <summary>Reads a child's stderr (a stream socket) and re-logs each line with the child's role and pid.</summary>
internal static class StderrPump
{
    /// <summary>Bytes read from the socket at once (rented only while a read has bytes to give).</summary>
    private const int Block = 16 * 1024;

    /// <summary>
    /// Lines being re-logged now, over every child: the master's <see cref="MemoryTrim"/> reads
    /// it as its load (the children's log lines are most of what the master allocates while they serve connections).
    /// </summary>
    public static ConnectionGauge Lines { get; } = new();

    /// <summary>Pumps still reading: their child's stderr is open (the child, or a process it left behind, runs).</summary>
    private static readonly ConcurrentDictionary<Task, byte> Running = new();

    /// <summary>Starts re-logging a child's stderr; the master waits for what is left of it before it exits (<see cref="DrainAsync"/>).</summary>
    public static void Start(int fd, ProcessRole role, string name, Func<int> pid, ILogger log)
    {
        var pump = RunAsync(fd, role, name, pid, log);
        Running.TryAdd(pump, 0);
        _ = pump.ContinueWith(t => Running.TryRemove(t, out _), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>
    /// Waits, up to <paramref name="bound"/>, until every child's stderr has been read to its end: the children have
    /// exited, but their last lines ("drained: 0 connections still open", a connection failed as Dispatch stops) may
    /// still be in the socket. Without this the master could exit before re-logging them. Pumps still open after the
    /// bound (a CGI script a worker left running holds its stderr) are left.
    /// </summary>
    /// <returns>Whether every pump finished.</returns>
    public static async Task<bool> DrainAsync(TimeSpan bound)
    {
        var pending = Running.Keys.ToArray();
        if (pending.Length == 0)
            return true;
        var all = Task.WhenAll(pending);
        return await Task.WhenAny(all, Task.Delay(bound)).ConfigureAwait(false) == all;
    }

    /// <summary>
    /// Reads <paramref name="fd"/> to its end, re-logging each line (the master uses <see cref="Start"/>; fuzzing calls this).
    /// Lines as <see cref="BoundedLineSplitter"/> cuts them: at most <see cref="BoundedLineSplitter.MaxLine"/> characters,
    /// the rest of a longer line read and dropped, so a child writing without line breaks cannot make the master buffer
    /// without end.
    /// </summary>
    public static async Task RunAsync(int fd, ProcessRole role, string name, Func<int> pid, ILogger log)
    {
        using var socket = new Socket(new SafeSocketHandle(fd, ownsHandle: true));
        using var stream = new NetworkStream(socket, ownsSocket: false);
        using var lines = new BoundedLineSplitter(line => Relog(line, role, name, pid, log));
        try
        {
            while (true)
            {
                // Wait for bytes holding no buffer (a zero-byte read): an idle child costs the master none.
                await stream.ReadAsync(Memory<byte>.Empty).ConfigureAwait(false);
                var block = ArrayPool<byte>.Shared.Rent(Block);
                try
                {
                    var read = await stream.ReadAsync(block.AsMemory(0, Block)).ConfigureAwait(false);
                    lines.Feed(block.AsSpan(0, read), final: read == 0);
                    if (read == 0)
                        return;
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(block);
                }
            }
        }
        catch (IOException)
        {
        }
    }

    private static void Relog(string line, ProcessRole role, string name, Func<int> pid, ILogger log)
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

            // The role as a string: an enum is rendered quoted by Serilog's own text formatter under {Message:lj} (the
            // master's log.file in text), unquoted by the console's; a string is unquoted in both.
            withProperties.Write(level, "{Role} {Pid} ({Name}): {Line}", role.ToString(), pid(), name, message);
        }
        finally
        {
            Lines.Leave();
        }
    }
}
