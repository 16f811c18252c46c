using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Dispatch.Platform.Hosting;
using Dispatch.Wire.Payloads;
using Dispatch.Worker.Http;
using Serilog;
using Serilog.Core;
using Serilog.Events;

namespace Dispatch.Worker.Tests.Support;

/// <summary>A fresh temporary directory, removed (without following symlinks) on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir()
    {
        Info = Directory.CreateTempSubdirectory("dispatch-worker-test-");
        Path = Info.FullName;
    }

    public DirectoryInfo Info { get; }

    public string Path { get; }

    public string Combine(string relative) => System.IO.Path.Combine(Path, relative);

    public string Write(string relative, string content) => Write(relative, Encoding.UTF8.GetBytes(content));

    public string Write(string relative, byte[] content)
    {
        var full = Combine(relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        File.WriteAllBytes(full, content);
        return full;
    }

    public string MakeDirectory(string relative) => Directory.CreateDirectory(Combine(relative)).FullName;

    public void Symlink(string relative, string target)
    {
        var full = Combine(relative);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        File.CreateSymbolicLink(full, target);
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>Serilog sink keeping every event, for assertions.</summary>
internal sealed class CollectingSink : ILogEventSink
{
    public ConcurrentQueue<LogEvent> Events { get; } = new();

    public void Emit(LogEvent logEvent) => Events.Enqueue(logEvent);

    public IEnumerable<LogEvent> AccessEvents => Events.Where(e =>
        e.Properties.TryGetValue("SourceContext", out var value)
        && value is ScalarValue { Value: "Dispatch.Worker.Http.AccessLog" });

    public static string? Scalar(LogEvent e, string name) =>
        e.Properties.TryGetValue(name, out var value) && value is ScalarValue scalar ? scalar.Value?.ToString() : null;

    public string DumpProblems() => string.Join(
        Environment.NewLine,
        Events.Where(e => e.Level >= LogEventLevel.Warning).Select(e => e.RenderMessage() + " " + e.Exception));
}

/// <summary>How the fake dispatcher reads the first bytes before handing a socket over.</summary>
internal static class InitialRead
{
    public static Func<Socket, CancellationToken, Task<byte[]>> Nothing { get; } = (_, _) => Task.FromResult(Array.Empty<byte>());

    /// <summary>Reads until the end of the request head is in the buffer (it may read further, like a real dispatcher).</summary>
    public static Func<Socket, CancellationToken, Task<byte[]>> Head { get; } = async (socket, ct) =>
    {
        var buffer = new MemoryStream();
        var chunk = new byte[4096];
        while (true)
        {
            var n = await socket.ReceiveAsync(chunk, SocketFlags.None, ct);
            if (n == 0)
            {
                return buffer.ToArray();
            }

            buffer.Write(chunk, 0, n);
            if (buffer.ToArray().AsSpan().IndexOf("\r\n\r\n"u8) >= 0)
            {
                return buffer.ToArray();
            }
        }
    };

    public static Func<Socket, CancellationToken, Task<byte[]>> Exactly(int count) => async (socket, ct) =>
    {
        var buffer = new byte[count];
        var read = 0;
        while (read < count)
        {
            var n = await socket.ReceiveAsync(buffer.AsMemory(read), SocketFlags.None, ct);
            if (n == 0)
            {
                break;
            }

            read += n;
        }

        return buffer[..read];
    };
}

/// <summary>
/// Test scaffolding standing in for the dispatcher: a TCP listener on 127.0.0.1 whose accepted sockets are handed to
/// the worker's server, after reading some initial bytes.
/// </summary>
internal sealed class FakeDispatcher : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly WorkerHttpServer _server;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _acceptLoop;
    private long _nextId;

    public FakeDispatcher(WorkerHttpServer server)
    {
        _server = server;
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Server.NoDelay = true; // as the dispatcher's listeners: inherited by each accepted connection
        _listener.Start(512);
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    public int Port { get; }

    public Func<Socket, CancellationToken, Task<byte[]>> ReadInitial { get; set; } = InitialRead.Nothing;

    public HandedProtocol Protocol { get; set; } = HandedProtocol.Http1;

    public string? Sni { get; set; }

    public IPEndPoint? ClientOverride { get; set; }

    public string? TlsProtocol { get; set; }

    public ConcurrentQueue<HandedConnectionInfo> Handed { get; } = new();

    public ConcurrentQueue<Exception> Errors { get; } = new();

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        try
        {
            await _acceptLoop;
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }

        _stop.Dispose();
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptSocketAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            _ = Task.Run(() => HandOverAsync(socket));
        }
    }

    private async Task HandOverAsync(Socket socket)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            timeout.CancelAfter(TimeSpan.FromSeconds(20));
            var initial = await ReadInitial(socket, timeout.Token);
            var info = new HandedConnectionInfo(
                Interlocked.Increment(ref _nextId), ClientOverride, null, Sni, TlsProtocol, TlsProtocol is null ? null : "TLS_AES_128_GCM_SHA256", Protocol);
            Handed.Enqueue(info);
            if (!_server.TryEnqueue(socket, initial, info))
            {
                socket.Dispose();
            }
        }
        catch (Exception e)
        {
            Errors.Enqueue(e);
            socket.Dispose();
        }
    }
}

/// <summary>One server plus its fake dispatcher and log sink.</summary>
internal sealed class Harness : IAsyncDisposable
{
    private Harness(WorkerHttpServer server, CollectingSink sink, TimeSpan startTime)
    {
        Server = server;
        Sink = sink;
        StartTime = startTime;
        Dispatcher = new FakeDispatcher(server);
    }

    public WorkerHttpServer Server { get; }

    public FakeDispatcher Dispatcher { get; }

    public CollectingSink Sink { get; }

    public TimeSpan StartTime { get; }

    public int Port => Dispatcher.Port;

    /// <summary>
    /// The managed heap after full collections, for tests that measure what connections hold (the process's, so the
    /// test's own clients are in it): the log sink's events are dropped first, the test's memory, not the worker's.
    /// </summary>
    public long CollectedHeap()
    {
        Sink.Events.Clear();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return GC.GetTotalMemory(forceFullCollection: true);
    }

    public static Task<Harness> StartAsync(params WorkerVhost[] vhosts) => StartAsync(cgiLimits: null, vhosts);

    /// <summary>As above, with the worker's own CGI limits of each vhost (<see cref="CgiLimits.Default"/> where null).</summary>
    public static async Task<Harness> StartAsync(Func<WorkerVhost, CgiLimits>? cgiLimits, params WorkerVhost[] vhosts)
    {
        var sink = new CollectingSink();
        var log = new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.Sink(sink).CreateLogger();
        var watch = Stopwatch.StartNew();
        var server = await WorkerHttpServer.StartAsync(vhosts, log, null, null, WorkerTimeouts.Default, CancellationToken.None, cgiLimits);
        return new Harness(server, sink, watch.Elapsed);
    }

    /// <summary>As above, with the worker's own <paramref name="timeouts"/> instead of the defaults.</summary>
    public static async Task<Harness> StartAsync(WorkerTimeouts timeouts, params WorkerVhost[] vhosts)
    {
        var sink = new CollectingSink();
        var log = new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.Sink(sink).CreateLogger();
        var watch = Stopwatch.StartNew();
        var server = await WorkerHttpServer.StartAsync(vhosts, log, null, null, timeouts, CancellationToken.None);
        return new Harness(server, sink, watch.Elapsed);
    }

    /// <summary>As above, with the worker's budget of lines about single connections made by <paramref name="connectionLog"/> (given the harness's logger).</summary>
    public static async Task<Harness> StartAsync(Func<Serilog.ILogger, ConnectionLogBudget> connectionLog, params WorkerVhost[] vhosts)
    {
        var sink = new CollectingSink();
        var log = new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.Sink(sink).CreateLogger();
        var watch = Stopwatch.StartNew();
        var server = await WorkerHttpServer.StartAsync(vhosts, log, null, null, WorkerTimeouts.Default, CancellationToken.None, connectionLog: connectionLog(log));
        return new Harness(server, sink, watch.Elapsed);
    }

    /// <summary>
    /// As above, with a budget of <paramref name="burst"/> lines about single connections and none a second after
    /// them, whose count is reported only when the server stops (<see cref="AssertNotLoggedReport"/> reads it).
    /// </summary>
    public static async Task<(Harness Harness, ConnectionLogBudget Budget)> StartWithLogBudgetAsync(int burst, params WorkerVhost[] vhosts)
    {
        ConnectionLogBudget? budget = null;
        var harness = await StartAsync(log => budget = new ConnectionLogBudget(log, WorkerHttpServer.ConnectionLogWhat, burst, perSecond: 0, reportEvery: TimeSpan.FromHours(1)), vhosts);
        return (harness, budget!);
    }

    /// <summary>After the server stopped: its budget's one report line, counting <paramref name="notLogged"/> lines.</summary>
    public void AssertNotLoggedReport(int notLogged)
    {
        var count = Assert.Single(Sink.Events, e => e.MessageTemplate.Text.Contains("lines about single connections", StringComparison.Ordinal));
        Assert.StartsWith($"{notLogged} lines about single connections ({WorkerHttpServer.ConnectionLogWhat}) not logged", count.RenderMessage(), StringComparison.Ordinal);
    }

    /// <summary>A vhost as the master would send it: no CGI, no proxy, no FastCGI, no TLS of its own.</summary>
    public static WorkerVhost Vhost(string name, string root, bool listing = false, string[]? aliases = null, string[]? index = null) =>
        new(name, aliases ?? [], root, listing, index ?? [], [], TimeSpan.Zero, null, []);

    /// <summary>A proxy mapping as the master sends it (the upstream parsed once, here); timeouts null: the defaults.</summary>
    public static ProxyRoute Proxy(string prefix, string upstream, TimeSpan? connect = null, TimeSpan? read = null) =>
        ProxyUpstream.TryParse(upstream, out var parsed, out var problem)
            ? new ProxyRoute(prefix, parsed, connect ?? TimeSpan.Zero, read ?? TimeSpan.Zero)
            : throw new ArgumentException(problem, nameof(upstream));

    /// <summary>An HttpClient whose every connection goes through the fake dispatcher.</summary>
    public HttpClient CreateClient(Version? version = null) =>
        new(CreateHandler())
        {
            DefaultRequestVersion = version ?? HttpVersion.Version11,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = TimeSpan.FromSeconds(30),
        };

    /// <summary>A handler whose every connection goes through the fake dispatcher (for ClientWebSocket's invoker).</summary>
    public SocketsHttpHandler CreateHandler()
    {
        var port = Port;
        return new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            UseCookies = false,
            AutomaticDecompression = DecompressionMethods.None,
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(IPAddress.Loopback, port, ct);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
    }

    public async Task<bool> WaitForOpenConnectionsAsync(int expected, TimeSpan timeout)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < timeout)
        {
            if (Server.OpenConnections == expected)
            {
                return true;
            }

            await Task.Delay(20);
        }

        return Server.OpenConnections == expected;
    }

    public async ValueTask DisposeAsync()
    {
        await Dispatcher.DisposeAsync();
        await Server.DisposeAsync();
    }
}

internal sealed record RawResponse(string StatusLine, int Status, Dictionary<string, string> Headers, byte[] Body)
{
    public string Text => Encoding.UTF8.GetString(Body);

    public string? Header(string name) => Headers.TryGetValue(name, out var value) ? value : null;
}

/// <summary>A plain TCP client speaking hand-written HTTP/1.x, for requests HttpClient would normalise.</summary>
internal sealed class RawConnection : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly List<byte> _buffer = [];

    private RawConnection(Socket socket) => _socket = socket;

    public static async Task<RawConnection> ConnectAsync(int port, int? receiveBufferSize = null)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        if (receiveBufferSize is { } size)
        {
            socket.ReceiveBufferSize = size;
        }

        await socket.ConnectAsync(IPAddress.Loopback, port);
        return new RawConnection(socket);
    }

    public static async Task<RawResponse> RequestAsync(int port, string request, bool head = false)
    {
        await using var connection = await ConnectAsync(port);
        await connection.SendAsync(request);
        return await connection.ReadResponseAsync(head);
    }

    public Task SendAsync(string text) => SendAsync(Encoding.ASCII.GetBytes(text));

    public async Task SendAsync(byte[] bytes)
    {
        var sent = 0;
        while (sent < bytes.Length)
        {
            sent += await _socket.SendAsync(bytes.AsMemory(sent), SocketFlags.None);
        }
    }

    public async Task<RawResponse> ReadResponseAsync(bool head = false)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        int headEnd;
        while ((headEnd = IndexOf(_buffer, "\r\n\r\n"u8)) < 0)
        {
            if (!await FillAsync(timeout.Token))
            {
                throw new IOException("Connection closed before a complete response head: " + Encoding.ASCII.GetString([.. _buffer]));
            }
        }

        var headText = Encoding.ASCII.GetString([.. _buffer.GetRange(0, headEnd)]);
        _buffer.RemoveRange(0, headEnd + 4);
        var lines = headText.Split("\r\n");
        var status = int.Parse(lines[0].Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var line in lines.Skip(1))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            var name = line[..colon].Trim();
            var value = line[(colon + 1)..].Trim();
            headers[name] = headers.TryGetValue(name, out var existing) ? existing + ", " + value : value;
        }

        byte[] body;
        if (head || status is 204 or 304 || status < 200)
        {
            body = [];
        }
        else if (headers.TryGetValue("Content-Length", out var lengthText))
        {
            var length = int.Parse(lengthText, System.Globalization.CultureInfo.InvariantCulture);
            while (_buffer.Count < length)
            {
                if (!await FillAsync(timeout.Token))
                {
                    throw new IOException("Connection closed inside a response body.");
                }
            }

            body = [.. _buffer.GetRange(0, length)];
            _buffer.RemoveRange(0, length);
        }
        else if (headers.TryGetValue("Transfer-Encoding", out var te) && te.Contains("chunked", StringComparison.OrdinalIgnoreCase))
        {
            throw new NotSupportedException("chunked responses are not expected from this server");
        }
        else
        {
            while (await FillAsync(timeout.Token))
            {
            }

            body = [.. _buffer];
            _buffer.Clear();
        }

        return new RawResponse(lines[0], status, headers, body);
    }

    /// <summary>True if the server closes the connection (EOF) within the timeout, with no further bytes.</summary>
    public async Task<bool> IsClosedByServerAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            var chunk = new byte[256];
            var n = await _socket.ReceiveAsync(chunk, SocketFlags.None, cts.Token);
            return n == 0 && _buffer.Count == 0;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
        catch (SocketException)
        {
            return true;
        }
    }

    /// <summary>Reads until EOF, reset or timeout; returns the number of bytes received.</summary>
    public async Task<long> DrainAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        long total = _buffer.Count;
        _buffer.Clear();
        var chunk = new byte[65536];
        try
        {
            int n;
            while ((n = await _socket.ReceiveAsync(chunk, SocketFlags.None, cts.Token)) > 0)
            {
                total += n;
            }
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException)
        {
        }

        return total;
    }

    /// <summary>Closes with a reset (SO_LINGER 0), as a client that gives up on a response does.</summary>
    public void Reset()
    {
        _socket.LingerState = new LingerOption(true, 0);
        _socket.Dispose();
    }

    public ValueTask DisposeAsync()
    {
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }

    private static int IndexOf(List<byte> buffer, ReadOnlySpan<byte> needle)
    {
        for (var i = 0; i + needle.Length <= buffer.Count; i++)
        {
            var match = true;
            for (var j = 0; j < needle.Length; j++)
            {
                if (buffer[i + j] != needle[j])
                {
                    match = false;
                    break;
                }
            }

            if (match)
            {
                return i;
            }
        }

        return -1;
    }

    private async Task<bool> FillAsync(CancellationToken ct)
    {
        var chunk = new byte[16384];
        var n = await _socket.ReceiveAsync(chunk, SocketFlags.None, ct);
        if (n == 0)
        {
            return false;
        }

        _buffer.AddRange(chunk.AsSpan(0, n));
        return true;
    }
}

/// <summary>Runs /usr/bin/curl.</summary>
internal static class Curl
{
    private static readonly string[] CommonArguments = ["-sS", "--max-time", "20", "--noproxy", "*"];

    public sealed record Result(int ExitCode, string Output, string Error)
    {
        /// <summary>Status code of the last response head in the <c>-i</c> output.</summary>
        public int Status
        {
            get
            {
                var line = Output.Split("\r\n").Last(l => l.StartsWith("HTTP/", StringComparison.Ordinal));
                return int.Parse(line.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
            }
        }
    }

    public static async Task<Result> RunAsync(params string[] arguments)
    {
        var start = new ProcessStartInfo("/usr/bin/curl")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in CommonArguments.Concat(arguments))
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return new Result(process.ExitCode, await output, await error);
    }
}
