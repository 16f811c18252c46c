using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Serilog;

namespace Dispatch.TlsDispatcher.Net;

/// <summary>
/// The Prometheus endpoint (<c>metrics.listen</c>, loopback only), served here because this process
/// is unprivileged: <c>GET /metrics</c> asks the master, which gathers every dispatcher's counters
/// with its own and answers with the exposition text in a sealed memfd. Anything else gets 404/405;
/// at most four scrapes at once, each with five seconds for its request head and five for the answer.
/// </summary>
internal sealed class MetricsEndpoint
{
    private const int MaxHead = 8192;
    private const int MaxText = 16 << 20;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);
    private readonly Socket _listener;
    private readonly IpcChannel _master;
    private readonly ILogger _log;
    private int _busy;
    private readonly ConcurrentDictionary<ulong, TaskCompletionSource<byte[]?>> _pending = new();
    private long _next;

    public MetricsEndpoint(Socket listener, string endpoint, IpcChannel master, ILogger log)
    {
        _listener = listener;
        Endpoint = endpoint;
        _master = master;
        _log = log;
    }

    public string Endpoint { get; }

    public async Task RunAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(stopping).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                _log.Warning("accept on the metrics listener {Endpoint} failed: {Reason}", Endpoint, e.Message);
                await Task.Delay(50, CancellationToken.None).ConfigureAwait(false);
                continue;
            }

            _ = ServeAsync(client);
        }
    }

    /// <summary>The master's answer to one of our requests (the memfd is closed here).</summary>
    public void OnReply(MetricsReply reply, int memfd)
    {
        byte[]? text = null;
        try
        {
            if (reply.Ok && memfd >= 0)
                text = SealedBlob.Read(memfd, MaxText);
        }
        catch (Exception e) when (e is WireException or SysCallException or IOException)
        {
            _log.Warning("Metrics from the master could not be read: {Reason}", e.Message);
            text = null;
        }
        finally
        {
            if (memfd >= 0)
                Libc.Close(memfd);
        }

        if (_pending.TryRemove(reply.RequestId, out var waiter))
            waiter.TrySetResult(text);
    }

    private async Task ServeAsync(Socket client)
    {
        using (client)
        {
            if (Interlocked.Increment(ref _busy) > 4)
            {
                Interlocked.Decrement(ref _busy);
                await RespondAsync(client, 503, "text/plain", "too many scrapes at once\n"u8.ToArray()).ConfigureAwait(false);
                return;
            }

            try
            {
                using var timeout = new CancellationTokenSource(Timeout);
                var head = await ReadHeadAsync(client, timeout.Token).ConfigureAwait(false);
                if (head is null)
                {
                    await RespondAsync(client, 400, "text/plain", "bad request\n"u8.ToArray()).ConfigureAwait(false);
                    return;
                }

                var line = head[..head.IndexOf('\r', StringComparison.Ordinal)].Split(' ');
                if (line.Length != 3 || !line[2].StartsWith("HTTP/1.", StringComparison.Ordinal))
                {
                    await RespondAsync(client, 400, "text/plain", "bad request\n"u8.ToArray()).ConfigureAwait(false);
                    return;
                }

                if (line[0] is not ("GET" or "HEAD"))
                {
                    await RespondAsync(client, 405, "text/plain", "only GET\n"u8.ToArray()).ConfigureAwait(false);
                    return;
                }

                var path = line[1].Split('?')[0];
                if (path != "/metrics")
                {
                    await RespondAsync(client, 404, "text/plain", "metrics are at /metrics\n"u8.ToArray()).ConfigureAwait(false);
                    return;
                }

                var text = await AskMasterAsync().ConfigureAwait(false);
                if (text is null)
                    await RespondAsync(client, 503, "text/plain", "the master did not answer\n"u8.ToArray()).ConfigureAwait(false);
                else
                    await RespondAsync(client, 200, "text/plain; version=0.0.4; charset=utf-8", line[0] == "HEAD" ? null : text, text.Length).ConfigureAwait(false);
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException or SysCallException or ObjectDisposedException)
            {
                _log.Debug("Metrics scrape ended: {Reason}", e.Message);
            }
            finally
            {
                Interlocked.Decrement(ref _busy);
            }
        }
    }

    private async Task<byte[]?> AskMasterAsync()
    {
        var id = (ulong)Interlocked.Increment(ref _next);
        var waiter = new TaskCompletionSource<byte[]?>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = waiter;
        try
        {
            _master.Send(new MetricsRequest(id));
            return await waiter.Task.WaitAsync(Timeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return null;
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    private static async Task<string?> ReadHeadAsync(Socket client, CancellationToken cancellationToken)
    {
        var buffer = new byte[MaxHead];
        var filled = 0;
        while (filled < buffer.Length)
        {
            var n = await client.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, cancellationToken).ConfigureAwait(false);
            if (n == 0)
                return null;
            filled += n;
            var end = buffer.AsSpan(0, filled).IndexOf("\r\n\r\n"u8);
            if (end >= 0)
                return Encoding.Latin1.GetString(buffer, 0, end + 2);
        }

        return null;
    }

    private static async Task RespondAsync(Socket client, int code, string type, byte[]? body, int? length = null)
    {
        var reason = code switch { 200 => "OK", 400 => "Bad Request", 404 => "Not Found", 405 => "Method Not Allowed", _ => "Service Unavailable" };
        var head = Encoding.ASCII.GetBytes($"HTTP/1.1 {code} {reason}\r\nContent-Type: {type}\r\nContent-Length: {length ?? body?.Length ?? 0}\r\nConnection: close\r\n\r\n");
        // A scraper that does not read must not hold one of the few slots for ever.
        using var timeout = new CancellationTokenSource(Timeout);
        await client.SendAsync(head, SocketFlags.None, timeout.Token).ConfigureAwait(false);
        if (body is { Length: > 0 })
            await client.SendAsync(body, SocketFlags.None, timeout.Token).ConfigureAwait(false);
        client.Shutdown(SocketShutdown.Send);
    }
}
