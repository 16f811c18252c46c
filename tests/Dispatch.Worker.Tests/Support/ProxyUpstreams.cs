using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Dispatch.Worker.Tests.Support;

/// <summary>What <see cref="EchoUpstream"/> saw of a request.</summary>
internal sealed record EchoResult(string Method, string Target, string Protocol, Dictionary<string, string> Headers, string Sha256, long Length)
{
    public string? Header(string name) =>
        Headers.FirstOrDefault(pair => pair.Key.Equals(name, StringComparison.OrdinalIgnoreCase)).Value;

    public static EchoResult Parse(string json) => JsonSerializer.Deserialize<EchoResult>(json)
        ?? throw new InvalidOperationException("no echo in: " + json);
}

/// <summary>
/// The tenant's application in the proxy tests: a real Kestrel (WebApplication) on a Unix socket or 127.0.0.1:0. By
/// default it echoes what it received (<see cref="EchoResult"/> as JSON, body hashed as it streams in); the request
/// header <c>X-Mode</c> selects other behaviours (chunked, hang, hang-after-chunk, reject).
/// </summary>
internal sealed class EchoUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;
    private long _bodyBytes;
    private int _requests;

    private EchoUpstream(WebApplication app, string name)
    {
        _app = app;
        Name = name;
    }

    /// <summary>"unix" or "tcp", sent back as X-Upstream.</summary>
    public string Name { get; }

    public string? SocketPath { get; private init; }

    public int Port { get; private set; }

    /// <summary>The proxy's upstream string for this application.</summary>
    public string Upstream => SocketPath is not null ? "unix:" + SocketPath : $"http://127.0.0.1:{Port}";

    /// <summary>Request body bytes received so far, over all requests.</summary>
    public long BodyBytes => Interlocked.Read(ref _bodyBytes);

    public int Requests => Volatile.Read(ref _requests);

    /// <summary>Released by the test to let mode "chunked" send its second chunk.</summary>
    public TaskCompletionSource ReleaseChunk { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Set when a hanging mode has received its request (and sent its chunk).</summary>
    public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Set when a hanging request observed RequestAborted.</summary>
    public TaskCompletionSource Aborted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Set when mode "chunked" has written its last chunk.</summary>
    public TaskCompletionSource Finished { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public static Task<EchoUpstream> StartUnixAsync(string socketPath) => StartAsync("unix", socketPath);

    public static Task<EchoUpstream> StartTcpAsync() => StartAsync("tcp", null);

    public async ValueTask DisposeAsync()
    {
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2)))
        {
            await _app.StopAsync(timeout.Token);
        }

        await _app.DisposeAsync();
    }

    private static async Task<EchoUpstream> StartAsync(string name, string? socketPath)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { EnvironmentName = "Production" });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = null;
            if (socketPath is not null)
            {
                kestrel.ListenUnixSocket(socketPath);
            }
            else
            {
                kestrel.Listen(IPAddress.Loopback, 0);
            }
        });
        var app = builder.Build();
        var upstream = new EchoUpstream(app, name) { SocketPath = socketPath };
        app.UseWebSockets();
        app.Run(upstream.HandleAsync);
        await app.StartAsync();
        if (socketPath is null)
        {
            var address = app.Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>().Addresses.Single();
            upstream.Port = new Uri(address).Port;
        }

        return upstream;
    }

    private async Task HandleAsync(HttpContext context)
    {
        Interlocked.Increment(ref _requests);
        var response = context.Response;
        response.Headers["X-Upstream"] = Name;
        if (context.WebSockets.IsWebSocketRequest)
        {
            await EchoWebSocketAsync(context);
            return;
        }

        switch (context.Request.Headers["X-Mode"].ToString())
        {
            case "chunked":
                await response.WriteAsync("first-chunk\n");
                await response.Body.FlushAsync();
                await ReleaseChunk.Task.WaitAsync(context.RequestAborted);
                await response.WriteAsync("second-chunk\n");
                Finished.TrySetResult();
                return;

            case "hang":
                await HangAsync(context);
                return;

            case "hang-after-chunk":
                await response.WriteAsync("first-chunk\n");
                await response.Body.FlushAsync();
                await HangAsync(context);
                return;

            case "reject":
                // Answers before reading the body, as an application refusing an upload does.
                response.StatusCode = StatusCodes.Status413PayloadTooLarge;
                await response.WriteAsync("too large for the application\n");
                return;
        }

        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[64 * 1024];
        long length = 0;
        int n;
        while ((n = await context.Request.Body.ReadAsync(buffer)) > 0)
        {
            hash.AppendData(buffer, 0, n);
            length += n;
            Interlocked.Add(ref _bodyBytes, n);
        }

        var echo = new EchoResult(
            context.Request.Method,
            context.Features.GetRequiredFeature<IHttpRequestFeature>().RawTarget,
            context.Request.Protocol,
            context.Request.Headers.ToDictionary(h => h.Key, h => h.Value.ToString(), StringComparer.OrdinalIgnoreCase),
            Convert.ToHexStringLower(hash.GetHashAndReset()),
            length);
        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(echo));
        response.ContentType = "application/json";
        response.ContentLength = json.Length;
        if (!HttpMethods.IsHead(context.Request.Method))
        {
            await response.Body.WriteAsync(json);
        }
    }

    /// <summary>
    /// A WebSocket: first a text message describing the upgrade request it got (<see cref="EchoResult"/> as JSON), then
    /// every message echoed as it came (text or binary), until the client closes.
    /// </summary>
    private static async Task EchoWebSocketAsync(HttpContext context)
    {
        using var socket = await context.WebSockets.AcceptWebSocketAsync();
        var seen = new EchoResult(
            context.Request.Method,
            context.Features.GetRequiredFeature<IHttpRequestFeature>().RawTarget,
            context.Request.Protocol,
            context.Request.Headers.ToDictionary(h => h.Key, h => h.Value.ToString(), StringComparer.OrdinalIgnoreCase),
            string.Empty,
            0);
        await socket.SendAsync(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(seen)), System.Net.WebSockets.WebSocketMessageType.Text, true, context.RequestAborted);
        var buffer = new byte[64 * 1024];
        var message = new MemoryStream();
        while (true)
        {
            var result = await socket.ReceiveAsync(buffer, context.RequestAborted);
            if (result.MessageType == System.Net.WebSockets.WebSocketMessageType.Close)
            {
                await socket.CloseAsync(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, "bye", context.RequestAborted);
                return;
            }

            message.Write(buffer, 0, result.Count);
            if (result.EndOfMessage)
            {
                await socket.SendAsync(message.ToArray(), result.MessageType, true, context.RequestAborted);
                message.SetLength(0);
            }
        }
    }

    private async Task HangAsync(HttpContext context)
    {
        Started.TrySetResult();
        try
        {
            await Task.Delay(Timeout.InfiniteTimeSpan, context.RequestAborted);
        }
        catch (OperationCanceledException)
        {
            Aborted.TrySetResult();
        }
    }
}

/// <summary>
/// A hand-written HTTP/1.1 upstream on a Unix socket, for answers Kestrel would not give (hop-by-hop response fields,
/// no headers at all, a body cut short). Each request head is passed to <see cref="Behaviour"/>, which returns whether
/// to keep the connection for another request.
/// </summary>
internal sealed class RawUpstream : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _acceptLoop;
    private int _requests;

    public RawUpstream(string socketPath)
    {
        SocketPath = socketPath;
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        _listener.Listen(16);
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    public string SocketPath { get; }

    public string Upstream => "unix:" + SocketPath;

    public int Requests => Volatile.Read(ref _requests);

    /// <summary>Set when a connection was closed by the proxy while <see cref="Hang"/> waited on it.</summary>
    public TaskCompletionSource PeerClosed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Func<Socket, string, CancellationToken, Task<bool>> Behaviour { get; set; } = (socket, _, ct) => Respond(socket, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", ct);

    /// <summary>Sends no response at all; records when the proxy closes the connection.</summary>
    public Func<Socket, string, CancellationToken, Task<bool>> Hang => async (socket, _, ct) =>
    {
        var buffer = new byte[1024];
        while (await socket.ReceiveAsync(buffer, SocketFlags.None, ct) > 0)
        {
        }

        PeerClosed.TrySetResult();
        return false;
    };

    public static async Task<bool> Respond(Socket socket, string response, CancellationToken ct, bool close = false)
    {
        await socket.SendAsync(Encoding.ASCII.GetBytes(response), SocketFlags.None, ct);
        if (close)
        {
            socket.Shutdown(SocketShutdown.Both);
        }

        return !close;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
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
                socket = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            _ = Task.Run(() => ServeAsync(socket));
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        using (socket)
        {
            try
            {
                var pending = new List<byte>();
                var chunk = new byte[4096];
                while (true)
                {
                    int end;
                    while ((end = IndexOfHeadEnd(pending)) < 0)
                    {
                        var n = await socket.ReceiveAsync(chunk, SocketFlags.None, _stop.Token);
                        if (n == 0)
                        {
                            return;
                        }

                        pending.AddRange(chunk.AsSpan(0, n));
                    }

                    var head = Encoding.ASCII.GetString([.. pending.GetRange(0, end)]);
                    pending.RemoveRange(0, end + 4);
                    Interlocked.Increment(ref _requests);
                    if (!await Behaviour(socket, head, _stop.Token))
                    {
                        return;
                    }
                }
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
            }
        }
    }

    private static int IndexOfHeadEnd(List<byte> buffer)
    {
        for (var i = 0; i + 3 < buffer.Count; i++)
        {
            if (buffer[i] == '\r' && buffer[i + 1] == '\n' && buffer[i + 2] == '\r' && buffer[i + 3] == '\n')
            {
                return i;
            }
        }

        return -1;
    }
}
