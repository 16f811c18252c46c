using System.Text.Json;
using Dispatch.Master.Children;
using Dispatch.Master.Config;
using Dispatch.Master.Operations;
using Dispatch.Master.Tests.Support;
using Serilog;

namespace Dispatch.Master.Tests.Operations;

/// <summary>Status and metrics from the master's own view (no dispatcher asked here).</summary>
public sealed class StatusReportTests : IDisposable
{
    private readonly Support.Children _children = new();
    private readonly RunningConfig _config = new(TwoTenants.Build());
    private readonly WorkerTable _workers = new();
    private readonly SpawnBackoff _backoff = new();
    private readonly MasterCounters _counters = new();
    private readonly DispatcherReports _reports;
    private readonly StatusReport _report;

    public StatusReportTests()
    {
        var log = new LoggerConfiguration().CreateLogger();
        _reports = new DispatcherReports(log);
        _report = new StatusReport(_config, _workers, _backoff, _reports, () => [], _counters, log);
    }

    public void Dispose() => _children.Dispose();

    [Fact]
    public async Task Status_shows_each_pool_s_workers_backoff_and_the_last_reload()
    {
        var dispatcher = _children.Dispatcher();
        var worker = _children.Worker("a");
        _workers.Reserve(_config.Current.Pools["a"], 100, _backoff);
        _workers.Register(worker, dispatcher);
        _backoff.Failed("b", "exec failed");
        _report.RecordReload("rejected", "rejected (SIGHUP): bad");

        using var status = JsonDocument.Parse(await _report.StatusAsync(json: true));

        var root = status.RootElement;
        Assert.Equal(1, root.GetProperty("master").GetProperty("configVersion").GetInt64());
        Assert.Equal("rejected", root.GetProperty("lastReload").GetProperty("result").GetString());
        var pools = root.GetProperty("pools").EnumerateArray().ToDictionary(p => p.GetProperty("name").GetString()!);
        var a = pools["a"].GetProperty("workers").EnumerateArray().Single();
        Assert.Equal(worker.Pid, a.GetProperty("pid").GetInt32());
        Assert.Equal(dispatcher.Pid, a.GetProperty("dispatcher").GetInt32());
        Assert.Equal(JsonValueKind.Null, a.GetProperty("connections").ValueKind);
        Assert.Equal(JsonValueKind.Null, pools["a"].GetProperty("backoff").ValueKind);
        Assert.Equal(1, pools["b"].GetProperty("backoff").GetProperty("failures").GetInt32());
        Assert.Equal("exec failed", pools["b"].GetProperty("backoff").GetProperty("lastError").GetString());
        Assert.Empty(root.GetProperty("dispatchers").EnumerateArray());
        Assert.Equal(1, root.GetProperty("counters").GetProperty("dispatch_reloads_total{result=\"rejected\"}").GetInt64());
    }

    [Fact]
    public void Metrics_count_workers_per_pool_failed_starts_and_whether_the_last_reload_was_accepted()
    {
        _workers.Reserve(_config.Current.Pools["a"], 100, _backoff);
        _workers.Register(_children.Worker("a"), _children.Dispatcher());
        _backoff.Failed("b", "exec failed");
        Assert.Contains("dispatch_last_reload_ok 1", _report.RenderMetrics([]), StringComparison.Ordinal);

        _report.RecordReload("failed", "failed (SIGHUP): EIO");
        var metrics = _report.RenderMetrics([]);

        Assert.Contains("dispatch_workers{pool=\"a\"} 1\n", metrics, StringComparison.Ordinal);
        Assert.Contains("dispatch_workers{pool=\"b\"} 0\n", metrics, StringComparison.Ordinal);
        Assert.Contains("dispatch_pool_start_failures{pool=\"b\"} 1\n", metrics, StringComparison.Ordinal);
        Assert.Contains("dispatch_pool_start_failures{pool=\"a\"} 0\n", metrics, StringComparison.Ordinal);
        Assert.Contains("dispatch_last_reload_ok 0", metrics, StringComparison.Ordinal);
        Assert.Contains("dispatch_config_version 1", metrics, StringComparison.Ordinal);
        Assert.Contains("dispatch_reloads_total{result=\"failed\"} 1", metrics, StringComparison.Ordinal);
    }

    /// <summary>
    /// The metrics per vhost: what a dispatcher reported (its workers' traffic) for each vhost of the config, zeros for a
    /// vhost that served nothing, nothing for a vhost the config does not have; a histogram whose buckets add up; and
    /// the dispatcher's last report still counted once it has exited (an upgrade, a crash).
    /// </summary>
    [Fact]
    public async Task Metrics_show_each_configured_vhosts_traffic_as_reported_and_keep_it_when_the_dispatcher_is_gone()
    {
        var dispatcher = _children.Dispatcher(out var peer);
        using (peer)
        {
            var ask = _reports.GatherAsync([(dispatcher, false)]);
            using var request = await peer.ReceiveAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            var id = request!.Decode<Dispatch.Wire.StatsRequest>().RequestId;
            Dispatch.Wire.VhostTraffic[] traffic =
            [
                new("a.example", [0, 7, 1, 2, 0], 12_345, 1_500_000, [5, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 1]),
                new("evil.example", [0, 1_000_000, 0, 0, 0], 1, 1, [1_000_000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            ];
            _reports.OnStats(dispatcher, new Dispatch.Wire.DispatcherStats(id, [], [], Traffic: true), traffic);
            var reports = await ask;

            foreach (var metrics in new[] { _report.RenderMetrics(reports), Forgotten() })
            {
                Assert.Contains("dispatch_vhost_requests_total{vhost=\"a.example\",code=\"2xx\"} 7\n", metrics, StringComparison.Ordinal);
                Assert.Contains("dispatch_vhost_requests_total{vhost=\"a.example\",code=\"3xx\"} 1\n", metrics, StringComparison.Ordinal);
                Assert.Contains("dispatch_vhost_requests_total{vhost=\"a.example\",code=\"4xx\"} 2\n", metrics, StringComparison.Ordinal);
                Assert.Contains("dispatch_vhost_requests_total{vhost=\"b.example\",code=\"2xx\"} 0\n", metrics, StringComparison.Ordinal);
                Assert.Contains("dispatch_vhost_response_bytes_total{vhost=\"a.example\"} 12345\n", metrics, StringComparison.Ordinal);
                Assert.DoesNotContain("evil.example", metrics, StringComparison.Ordinal);
                Assert.Contains(
                    "dispatch_vhost_request_duration_seconds_bucket{vhost=\"a.example\",le=\"0.005\"} 5\n"
                    + "dispatch_vhost_request_duration_seconds_bucket{vhost=\"a.example\",le=\"0.01\"} 5\n"
                    + "dispatch_vhost_request_duration_seconds_bucket{vhost=\"a.example\",le=\"0.025\"} 5\n"
                    + "dispatch_vhost_request_duration_seconds_bucket{vhost=\"a.example\",le=\"0.05\"} 8\n",
                    metrics,
                    StringComparison.Ordinal);
                Assert.Contains("dispatch_vhost_request_duration_seconds_bucket{vhost=\"a.example\",le=\"10\"} 9\n", metrics, StringComparison.Ordinal);
                Assert.Contains("dispatch_vhost_request_duration_seconds_bucket{vhost=\"a.example\",le=\"+Inf\"} 10\n", metrics, StringComparison.Ordinal);
                Assert.Contains("dispatch_vhost_request_duration_seconds_sum{vhost=\"a.example\"} 1.5\n", metrics, StringComparison.Ordinal);
                Assert.Contains("dispatch_vhost_request_duration_seconds_count{vhost=\"a.example\"} 10\n", metrics, StringComparison.Ordinal);
                Assert.Contains("dispatch_vhost_request_duration_seconds_count{vhost=\"b.example\"} 0\n", metrics, StringComparison.Ordinal);
                Assert.Single(metrics.Split('\n'), l => l == "# TYPE dispatch_vhost_request_duration_seconds histogram");
            }

            using var status = JsonDocument.Parse(await _report.StatusAsync(json: true));
            var a = status.RootElement.GetProperty("vhosts").EnumerateArray().Single(v => v.GetProperty("name").GetString() == "a.example");
            Assert.Equal(7, a.GetProperty("requests").GetProperty("2xx").GetInt64());
            Assert.Equal(12_345, a.GetProperty("bytesSent").GetInt64());
        }

        // The dispatcher has exited: what it reported last is carried.
        string Forgotten()
        {
            _reports.Forget(dispatcher);
            return _report.RenderMetrics([]);
        }
    }
}
