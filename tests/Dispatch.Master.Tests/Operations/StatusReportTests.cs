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
    private readonly StatusReport _report;

    public StatusReportTests()
    {
        var log = new LoggerConfiguration().CreateLogger();
        _report = new StatusReport(_config, _workers, _backoff, new DispatcherReports(log), () => [], _counters, log);
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
}
