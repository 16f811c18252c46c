using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// A well-behaved client (.NET's HttpClient) that keeps requesting one URL from the moment it is started until it is
/// disposed, one request at a time per lane, and counts what was served (status 200 with the expected body) and what
/// failed, with why. Either on kept-alive connections (as a browser) or on a new connection per request. Requests wait
/// up to a generous bound: a request delayed by a fault and then served counts as served; the faults tests assert on
/// the counts, never on a duration.
/// </summary>
public sealed class GoodClient : IAsyncDisposable
{
    private readonly HttpClient _http;
    private readonly Uri _url;
    private readonly string _expected;
    private readonly bool _keepAlive;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _lanes = [];
    private readonly ConcurrentQueue<string> _failures = new();
    private long _served;

    /// <param name="name">For messages ("b keep-alive").</param>
    /// <param name="url">What to request (http or https; https trusts the sample CA only).</param>
    /// <param name="host">The Host header (plain HTTP) or the name connected to (https: resolved to 127.0.0.1).</param>
    /// <param name="expected">The body every answer must have.</param>
    public GoodClient(string name, string url, string host, string expected, bool keepAlive, int lanes = 1)
    {
        Name = name;
        _expected = expected;
        _keepAlive = keepAlive;
        var target = new Uri(url);
        var handler = new SocketsHttpHandler
        {
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
            ConnectTimeout = TimeSpan.FromSeconds(60),
            ConnectCallback = async (context, token) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    await socket.ConnectAsync(IPAddress.Loopback, context.DnsEndPoint.Port, token);
                    return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        if (target.Scheme == Uri.UriSchemeHttps)
        {
            handler.SslOptions = new SslClientAuthenticationOptions
            {
                CertificateChainPolicy = TestWorld.SampleCaChainPolicy(),
            };
            _url = new UriBuilder(target) { Host = host }.Uri;
        }
        else
        {
            _url = target;
        }

        _http = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(90) };
        if (target.Scheme != Uri.UriSchemeHttps)
            _http.DefaultRequestHeaders.Host = host;
        for (var i = 0; i < lanes; i++)
            _lanes.Add(Task.Run(RunAsync));
    }

    public string Name { get; }

    public long Served => Interlocked.Read(ref _served);

    public IReadOnlyCollection<string> Failures => _failures;

    public int FailureCount => _failures.Count;

    /// <summary>Waits (up to a generous bound, for the event, not a duration) until <paramref name="more"/> further requests were served.</summary>
    public void WaitForProgress(int more = 5, TimeSpan? deadline = null)
    {
        var target = Served + more;
        Assert.True(Tools.Eventually(() => Served >= target, deadline ?? TimeSpan.FromSeconds(90)), $"{Name}: {Served} served, {target} awaited; failures: {string.Join(" | ", _failures.TakeLast(5))}");
    }

    public override string ToString() => $"{Name}: {Served} served, {FailureCount} failed{(FailureCount > 0 ? ": " + string.Join(" | ", _failures.Take(5)) : string.Empty)}";

    private async Task RunAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, _url);
                if (!_keepAlive)
                    request.Headers.ConnectionClose = true;
                using var response = await _http.SendAsync(request, _stop.Token);
                var body = await response.Content.ReadAsStringAsync(_stop.Token);
                if (response.StatusCode == HttpStatusCode.OK && body == _expected)
                    Interlocked.Increment(ref _served);
                else
                    _failures.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} {(int)response.StatusCode} {body[..Math.Min(body.Length, 80)]}");
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
            {
                _failures.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} {e.GetType().Name}: {e.Message}{(e.InnerException is { } inner ? " (" + inner.Message + ")" : string.Empty)}");
                await Task.Delay(50, CancellationToken.None); // no spinning on a refused port
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_lanes);
        _http.Dispose();
        _stop.Dispose();
    }
}
