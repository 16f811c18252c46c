using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Dispatch.Platform.Interop;
using Dispatch.TlsDispatcher.Net;
using Dispatch.TlsDispatcher.Workers;
using Dispatch.Wire;
using Dispatch.Wire.Payloads;
using Serilog;

namespace Dispatch.TlsDispatcher.Http;

/// <summary>
/// A plain-HTTP listener: accept, read the request head (bounded in size and time), route on Host,
/// then pass the client socket and the bytes already read to a worker of the vhost's pool. The
/// dispatcher leaves the connection as soon as it is handed over.
/// </summary>
internal sealed class PlainHttpFrontend : Frontend
{
    private readonly Func<RouteTable> _routes;
    private readonly WorkerPools _workers;

    public PlainHttpFrontend(Socket listener, string localName, TrustedProxies proxies, Func<RouteTable> routes, WorkerPools workers, ReadinessPoller poller, ILogger log)
        : base(listener, localName, proxies, poller, log)
    {
        _routes = routes;
        _workers = workers;
    }

    public override string Name => "http " + LocalName;

    protected override int PreludeSize => _routes().Settings.MaxRequestHead;

    protected override bool HandleOnAcceptLoop => true;

    protected override int PreludeTimeoutMs => _routes().Settings.HeaderTimeoutMs;

    // A head is peeked again whenever a byte arrives: beyond this much (a whole head normally comes in one segment), it
    // is read into a buffer as before rather than peeked over and over.
    private const int PeekedHeadLimit = 2048;

    protected override int PreludeNeeds(ReadOnlySpan<byte> queued)
    {
        if (queued.Length >= PeekedHeadLimit)
            return 0;
        var scanned = 0;
        Span<char> host = stackalloc char[256];
        return RequestHead.Parse(queued, ref scanned, host, out _, out _, out _, out _) == HeadStatus.Incomplete ? queued.Length + 1 : 0;
    }

    protected override async Task HandleAsync(Socket client, ulong id, ConnectionStart start)
    {
        var fd = start.Fd;
        var routes = _routes();
        var settings = routes.Settings;
        using var timeout = new CancellationTokenSource(start.Remaining(settings.HeaderTimeoutMs));
        var (status, filled, host, target) = await ReadHeadAsync(start, settings.MaxRequestHead, timeout.Token).ConfigureAwait(false);
        if (status is not null)
        {
            Reject(fd, status.Value.Code, status.Value.Reason, id, start);
            return;
        }

        if (filled == 0)
            return; // The client closed before sending anything.
        var buffer = start.Buffer;
        var route = routes.Route(host!);
        if (route is null)
        {
            Reject(fd, 404, $"No site named '{host}' is served here.", id, start);
            return;
        }

        var path = buffer.AsSpan(target);
        // An identity vhost is served over TLS only: everything is redirected (no ACME exception: it has no pool of its own).
        if (route.Identity is not null || (route.HttpMode == HttpModes.Redirect && !path.StartsWith("/.well-known/acme-challenge/"u8)))
        {
            Redirect(fd, route.Name, host!, path, buffer.AsSpan(0, 4).SequenceEqual("GET "u8) || buffer.AsSpan(0, 5).SequenceEqual("HEAD "u8), routes.HttpsPort, id, start.AcceptedAt);
            return;
        }

        var meta = new Connection(
            id, ConnectionMode.PlainHttp, AppProtocol.Http1, start.ClientText, LocalName, null, null, null, buffer.AsMemory(0, filled));
        Poller.Remove(fd);
        if (!await _workers.HandOffAsync(route.Pool, meta, fd, settings).ConfigureAwait(false))
        {
            Interlocked.Increment(ref DispatcherMetrics.NoWorker);
            Reject(fd, 503, $"No worker is available for '{host}' right now; try again shortly.", id, start, route.Name);
        }
    }

    private async Task<((int Code, string Reason)? Error, int Filled, string? Host, Range Target)> ReadHeadAsync(ConnectionStart start, int max, CancellationToken timeout)
    {
        var buffer = start.Buffer;
        var filled = start.Filled;
        var scanned = 0;
        var hostChars = new char[256];
        var fresh = filled > 0;
        while (true)
        {
            if (!fresh)
            {
                int n;
                try
                {
                    n = await ReceiveAsync(start.Fd, buffer.AsMemory(filled, max - filled), timeout).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return ((408, "The request head did not arrive in time."), filled, null, default);
                }

                if (n == 0)
                    return (filled == 0 ? null : (400, "The request head ended early."), filled, null, default);
                filled += n;
            }

            fresh = false;
            var status = RequestHead.Parse(buffer.AsSpan(0, filled), ref scanned, hostChars, out var hostLength, out _, out var target, out var code, out var error);
            switch (status)
            {
                case HeadStatus.Complete:
                    return (null, filled, new string(hostChars, 0, hostLength), target);
                case HeadStatus.Invalid:
                    return ((code, $"Bad request: {error}."), filled, null, default);
            }

            if (filled >= max)
                return ((431, $"The request head exceeds {max} bytes."), filled, null, default);
        }
    }

    /// <summary>
    /// Answers a redirect to https from the dispatcher itself (no worker needed): 301 for GET and HEAD,
    /// 308 (method and body preserved) for anything else.
    /// </summary>
    private unsafe void Redirect(int fd, string vhost, string host, ReadOnlySpan<byte> target, bool safeMethod, int httpsPort, ulong id, long acceptedAt)
    {
        var path = System.Text.Encoding.Latin1.GetString(target);
        if (!path.StartsWith('/'))
        {
            // Absolute-form: keep the path and query only.
            var scheme = path.IndexOf("://", StringComparison.Ordinal);
            var slash = scheme < 0 ? -1 : path.IndexOf('/', scheme + 3);
            path = slash < 0 ? "/" : path[slash..];
        }

        var location = httpsPort == 443 ? $"https://{host}{path}" : $"https://{host}:{httpsPort}{path}";
        var code = safeMethod ? 301 : 308;
        DispatcherMetrics.Response(code, vhost, 0, acceptedAt);
        Log.Debug("Connection {ConnectionId}: redirect to {Location}", id, location);
        var response = System.Text.Encoding.Latin1.GetBytes(
            $"HTTP/1.1 {code} {(safeMethod ? "Moved Permanently" : "Permanent Redirect")}\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        fixed (byte* p = response)
            Libc.Send(fd, p, (nuint)response.Length, Libc.MSG_DONTWAIT | Libc.MSG_NOSIGNAL);
        Libc.Shutdown(fd, Libc.SHUT_WR);
    }

    protected override void RefuseOverLimit(Socket client, int fd, bool perAddress) =>
        Respond(fd, perAddress ? 429 : 503, perAddress ? "Too many connections from your address; try again shortly." : "The server is busy; try again shortly.");

    /// <summary>Refuses the connection with <paramref name="code"/>; <paramref name="vhost"/>: the site it was for, when one is served here.</summary>
    private void Reject(int fd, int code, string reason, ulong id, ConnectionStart start, string? vhost = null)
    {
        if (MayLogConnection())
            Log.Information("Connection {ConnectionId} from {Client} refused with {Status}: {Reason}", id, start.ClientText, code, reason);
        var body = Respond(fd, code, reason);
        if (vhost is not null)
            DispatcherMetrics.VhostAnswers.Record(vhost, code, body, start.AcceptedAt);
    }

    /// <summary>Answers <paramref name="code"/> with <paramref name="reason"/> as a text body, and ends our side; returns the body's length.</summary>
    private static unsafe int Respond(int fd, int code, string reason)
    {
        DispatcherMetrics.Response(code);
        var text = code switch
        {
            400 => "Bad Request",
            404 => "Not Found",
            408 => "Request Timeout",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Error",
        };
        var body = reason + "\n";
        var response = System.Text.Encoding.ASCII.GetBytes(
            $"HTTP/1.1 {code} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n{body}");
        fixed (byte* p = response)
            Libc.Send(fd, p, (nuint)response.Length, Libc.MSG_DONTWAIT | Libc.MSG_NOSIGNAL);
        Libc.Shutdown(fd, Libc.SHUT_WR);
        return body.Length;
    }
}
