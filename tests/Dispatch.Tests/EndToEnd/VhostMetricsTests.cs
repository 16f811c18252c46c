using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// The metrics per vhost (docs/operations.md, "Metrics per vhost"): each worker counts what its vhosts served and
/// reports it to its dispatcher (WorkerTraffic), the dispatcher sums its workers and answers the master's stats
/// request with them, the master renders them. Checked with curl's own counts of what it received, on the real
/// processes; and for one-shot workers, each of which has been let go (its channel half-closed) before its request
/// even ends.
/// </summary>
public sealed class VhostMetricsTests : IDisposable
{
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public VhostMetricsTests(ITestOutputHelper output) => _output = output;

    private static string Master => Path.Combine(TestWorld.AppDirectory, "Master");

    [SkippableFact]
    public void Requests_statuses_body_bytes_and_durations_are_counted_per_vhost_as_the_clients_received_them()
    {
        var site = TwoTenantSite.Create("vhost-metrics", moreA: new Dictionary<string, string> { ["big.txt"] = new string('x', 300_000) });
        var metricsPort = TestWorld.FreePort();
        var socket = Path.Combine(site.Directory, "run", "control.sock");
        site.Terminate("b");
        site.Config["control"] = new JsonObject { ["socket"] = socket };
        site.Config["metrics"] = new JsonObject { ["listen"] = $"127.0.0.1:{metricsPort}" };
        var d = _dispatch = site.StartReady(_output);

        // a: 4 pages and 1 large file (200), 2 missing (404), 1 HEAD (200, no body); b: 3 over HTTPS (200, handed TLS).
        long bytesA = 0, bytesB = 0;
        void Get(string host, string path, int status, ref long bytes, params string[] extra)
        {
            var port = host == "b.localhost" ? site.TlsPort : d.HttpPort;
            var url = host == "b.localhost" ? $"https://b.localhost:{port}{path}" : $"http://127.0.0.1:{port}{path}";
            string[] args = host == "b.localhost"
                ? ["--cacert", TestWorld.CaPath, "--resolve", $"b.localhost:{port}:127.0.0.1", .. extra, url]
                : ["-H", $"Host: {host}", .. extra, url];
            var r = Tools.Curl(args);
            Assert.Equal(status, r.Status);
            // curl -I prints the head where the body would be: a HEAD response has no body.
            bytes += extra.Contains("-I") ? 0 : Encoding.UTF8.GetByteCount(r.Body);
        }

        for (var i = 0; i < 4; i++)
            Get("a.localhost", "/", 200, ref bytesA);
        Get("a.localhost", "/big.txt", 200, ref bytesA);
        Get("a.localhost", "/nope", 404, ref bytesA);
        Get("a.localhost", "/nope/either", 404, ref bytesA);
        Get("a.localhost", "/", 200, ref bytesA, "-I");
        for (var i = 0; i < 3; i++)
            Get("b.localhost", "/", 200, ref bytesB);
        Assert.True(bytesA > 300_000);

        // The workers report within a second of a request; the scrape asks the dispatcher then.
        using var http = new HttpClient();
        string metrics = string.Empty;
        double Sample(string key)
        {
            var line = metrics.Split('\n').SingleOrDefault(l => l.StartsWith(key + " ", StringComparison.Ordinal));
            return line is null ? double.NaN : double.Parse(line[(key.Length + 1)..], CultureInfo.InvariantCulture);
        }

        Assert.True(
            Tools.Eventually(() =>
            {
                metrics = http.GetStringAsync(new Uri($"http://127.0.0.1:{metricsPort}/metrics")).GetAwaiter().GetResult();
                return Sample("dispatch_vhost_requests_total{vhost=\"a.localhost\",code=\"2xx\"}") == 6
                    && Sample("dispatch_vhost_requests_total{vhost=\"b.localhost\",code=\"2xx\"}") == 3;
            }),
            "the requests never showed in the metrics:\n" + metrics);
        _output.WriteLine(metrics);

        Assert.Equal(2, Sample("dispatch_vhost_requests_total{vhost=\"a.localhost\",code=\"4xx\"}"));
        Assert.Equal(0, Sample("dispatch_vhost_requests_total{vhost=\"a.localhost\",code=\"5xx\"}"));
        Assert.Equal(0, Sample("dispatch_vhost_requests_total{vhost=\"b.localhost\",code=\"4xx\"}"));
        Assert.Equal(bytesA, Sample("dispatch_vhost_response_bytes_total{vhost=\"a.localhost\"}"));
        Assert.Equal(bytesB, Sample("dispatch_vhost_response_bytes_total{vhost=\"b.localhost\"}"));

        // The histogram: cumulative buckets in order of their bounds, the last (+Inf) and _count the requests in all.
        Assert.Contains("# TYPE dispatch_vhost_request_duration_seconds histogram", metrics, StringComparison.Ordinal);
        Assert.Contains("# TYPE dispatch_vhost_requests_total counter", metrics, StringComparison.Ordinal);
        var buckets = metrics.Split('\n').Where(l => l.StartsWith("dispatch_vhost_request_duration_seconds_bucket{vhost=\"a.localhost\",", StringComparison.Ordinal)).ToList();
        Assert.Equal(12, buckets.Count);
        Assert.EndsWith("le=\"+Inf\"} 8", buckets[^1], StringComparison.Ordinal);
        var counts = buckets.Select(l => long.Parse(l[(l.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture)).ToList();
        Assert.Equal(counts.Order(), counts);
        Assert.Equal(8, Sample("dispatch_vhost_request_duration_seconds_count{vhost=\"a.localhost\"}"));
        Assert.Equal(3, Sample("dispatch_vhost_request_duration_seconds_count{vhost=\"b.localhost\"}"));
        Assert.True(Sample("dispatch_vhost_request_duration_seconds_sum{vhost=\"a.localhost\"}") > 0);

        // The same numbers in the status, per vhost.
        var run = Tools.Run(Master, "status", "--json", "--socket", socket);
        Assert.True(run.ExitCode == 0, run.Stderr);
        using var status = JsonDocument.Parse(run.Stdout);
        var a = status.RootElement.GetProperty("vhosts").EnumerateArray().Single(v => v.GetProperty("name").GetString() == "a.localhost");
        Assert.Equal(6, a.GetProperty("requests").GetProperty("2xx").GetInt64());
        Assert.Equal(2, a.GetProperty("requests").GetProperty("4xx").GetInt64());
        Assert.Equal(bytesA, a.GetProperty("bytesSent").GetInt64());
        var text = Tools.Run(Master, "status", "--socket", socket);
        Assert.Contains($"requests 2xx 6 4xx 2  sent {bytesA} bytes", text.Stdout, StringComparison.Ordinal);

        // A worker that exits (here: killed) takes nothing with it: its last report is carried by the dispatcher.
        var worker = d.WorkerPid("a");
        Assert.Equal(0, Tools.Run("kill", "-9", worker.ToString(CultureInfo.InvariantCulture)).ExitCode);
        Assert.True(Tools.Eventually(() => !Directory.Exists($"/proc/{worker}")));
        Get("a.localhost", "/", 200, ref bytesA);
        Assert.True(
            Tools.Eventually(() =>
            {
                metrics = http.GetStringAsync(new Uri($"http://127.0.0.1:{metricsPort}/metrics")).GetAwaiter().GetResult();
                return Sample("dispatch_vhost_requests_total{vhost=\"a.localhost\",code=\"2xx\"}") == 7;
            }),
            "the first worker's requests were lost with it:\n" + metrics);
        Assert.Equal(bytesA, Sample("dispatch_vhost_response_bytes_total{vhost=\"a.localhost\"}"));
    }

    /// <summary>
    /// The dispatcher's own answers count for their vhost too: its redirects to https (301 for a GET, 308 for a POST;
    /// no body) and its 503 when no worker comes (a pool whose worker fails at start), with the body bytes curl received.
    /// </summary>
    [SkippableFact]
    public void The_dispatchers_own_redirects_and_503s_count_for_their_vhost()
    {
        var site = TwoTenantSite.Create("vhost-metrics-dispatcher");
        var metricsPort = TestWorld.FreePort();
        var failing = Path.Combine(site.Directory, "fails-at-start");
        File.WriteAllText(failing, "#!/bin/sh\nexit 1\n");
        File.SetUnixFileMode(failing, (UnixFileMode)0b111_101_101);
        site.Config["pools"]!["a"]!["program"] = failing;
        site.Terminate("b")["http"] = "redirect";
        site.Config["metrics"] = new JsonObject { ["listen"] = $"127.0.0.1:{metricsPort}" };
        var d = _dispatch = site.StartReady(_output);
        var url = $"http://127.0.0.1:{d.HttpPort}/x?y";

        Assert.Equal(301, Tools.Curl("-H", "Host: b.localhost", url).Status);
        Assert.Equal(308, Tools.Curl("-H", "Host: b.localhost", "-d", "z=1", url).Status);
        long bytesA = 0;
        for (var i = 0; i < 2; i++)
        {
            var refused = Tools.Curl("-H", "Host: a.localhost", url);
            Assert.Equal(503, refused.Status);
            bytesA += Encoding.UTF8.GetByteCount(refused.Body);
        }

        Assert.True(bytesA > 0);
        using var http = new HttpClient();
        var metrics = http.GetStringAsync(new Uri($"http://127.0.0.1:{metricsPort}/metrics")).GetAwaiter().GetResult();
        _output.WriteLine(metrics);
        Assert.Contains("dispatch_vhost_requests_total{vhost=\"b.localhost\",code=\"3xx\"} 2\n", metrics, StringComparison.Ordinal);
        Assert.Contains("dispatch_vhost_response_bytes_total{vhost=\"b.localhost\"} 0\n", metrics, StringComparison.Ordinal);
        Assert.Contains("dispatch_vhost_requests_total{vhost=\"a.localhost\",code=\"5xx\"} 2\n", metrics, StringComparison.Ordinal);
        Assert.Contains($"dispatch_vhost_response_bytes_total{{vhost=\"a.localhost\"}} {bytesA}\n", metrics, StringComparison.Ordinal);
        Assert.Contains("dispatch_vhost_request_duration_seconds_count{vhost=\"a.localhost\"} 2\n", metrics, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void A_one_shot_workers_request_is_counted_though_its_dispatcher_let_it_go_when_it_handed_the_connection_over()
    {
        var site = TwoTenantSite.Create("vhost-metrics-one-shot");
        var metricsPort = TestWorld.FreePort();
        site.Config["pools"]!["a"]!["oneShot"] = true;
        site.Config["metrics"] = new JsonObject { ["listen"] = $"127.0.0.1:{metricsPort}" };
        var d = _dispatch = site.StartReady(_output);

        // Each connection gets a worker of its own, let go (its channel half-closed) as soon as the connection is
        // handed to it: its request is served after that, and reported as the worker ends.
        for (var i = 0; i < 5; i++)
            Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/").Status);
        Assert.Equal(404, Tools.Curl("-H", "Host: a.localhost", $"http://127.0.0.1:{d.HttpPort}/nope").Status);

        using var http = new HttpClient();
        var metrics = string.Empty;
        Assert.True(
            Tools.Eventually(() =>
            {
                metrics = http.GetStringAsync(new Uri($"http://127.0.0.1:{metricsPort}/metrics")).GetAwaiter().GetResult();
                return metrics.Contains("dispatch_vhost_requests_total{vhost=\"a.localhost\",code=\"2xx\"} 5\n", StringComparison.Ordinal)
                    && metrics.Contains("dispatch_vhost_requests_total{vhost=\"a.localhost\",code=\"4xx\"} 1\n", StringComparison.Ordinal);
            }),
            "the one-shot workers' requests never showed in the metrics:\n" + metrics);
        Assert.Contains("dispatch_vhost_request_duration_seconds_count{vhost=\"a.localhost\"} 6\n", metrics, StringComparison.Ordinal);
    }

    public void Dispose() => _dispatch?.Dispose();
}
