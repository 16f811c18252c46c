using System.Globalization;
using System.Text;
using System.Text.Json;
using Dispatch.Master.Children;
using Dispatch.Master.Config;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Serilog;

namespace Dispatch.Master.Operations;

/// <summary>
/// Status and metrics: the master's own view (pools, workers, vhosts, certificates, reloads) joined
/// with what each dispatcher reports when asked (its counters, and the open connections per worker).
/// The master renders; it never serves the metrics itself — a dispatcher does, on loopback.
/// </summary>
internal sealed class StatusReport(
    RunningConfig config, WorkerTable workerTable, SpawnBackoff spawnBackoff, DispatcherReports dispatcherReports,
    Func<IEnumerable<(ChildProcess Dispatcher, bool Retiring)>> dispatchers, MasterCounters counters, ILogger log)
{
    private readonly DateTime _started = DateTime.UtcNow;
    private int _metricsInFlight;
    private ReloadRecord? _lastReload;

    private static readonly Dictionary<string, string> Help = new(StringComparer.Ordinal)
    {
        ["dispatch_connections_accepted_total"] = "Connections accepted, by listener.",
        ["dispatch_connections_open"] = "Connections a dispatcher holds now (reading, routing, or proxying terminated TLS), by listener.",
        ["dispatch_tls_handshakes_total"] = "TLS handshakes in the dispatcher, by result.",
        ["dispatch_tls_passthrough_total"] = "TLS connections handed to the tenant's worker undecrypted.",
        ["dispatch_tls_bytes_total"] = "Plaintext bytes of terminated TLS connections, by direction (client's view).",
        ["dispatch_no_worker_total"] = "Connections failed because no worker could take them.",
        ["dispatch_dispatcher_responses_total"] = "Responses the dispatcher gave itself (redirects, bad requests, 503), by status code.",
        ["dispatch_worker_spawns_total"] = "Workers started, by pool and result.",
        ["dispatch_worker_exits_total"] = "Workers exited, by pool and how.",
        ["dispatch_worker_refusals_total"] = "Requests for a worker refused (limits, failures), by pool.",
        ["dispatch_reloads_total"] = "Configuration reloads, by result.",
        ["dispatch_dispatcher_restarts_total"] = "Dispatchers restarted after dying.",
        ["dispatch_upgrades_total"] = "Upgrades (SIGUSR2 or the control socket), by result.",
        ["dispatch_workers"] = "Live workers, by pool.",
        ["dispatch_pool_start_failures"] = "Consecutive failed worker starts, by pool (0 once a worker starts).",
        ["dispatch_pool_backoff_seconds"] = "Seconds before the next worker start of a pool whose workers fail to start (0: none pending).",
        ["dispatch_worker_open_connections"] = "Open connections per worker, as its dispatcher counts them.",
        ["dispatch_certificate_not_after_timestamp_seconds"] = "Expiry of each served certificate.",
        ["dispatch_config_version"] = "Version of the route snapshot in use (grows with each accepted reload).",
        ["dispatch_last_reload_ok"] = "1 if the last reload was accepted, 0 if it was rejected or failed.",
        ["dispatch_master_start_timestamp_seconds"] = "When the master started.",
        ["dispatch_vhost_requests_total"] = "Requests a vhost's workers answered, by status class.",
        ["dispatch_vhost_response_bytes_total"] = "Response body bytes a vhost's workers sent.",
    };

    private const string DurationHistogram = "dispatch_vhost_request_duration_seconds";
    private const string DurationHelp = "How long a vhost's requests took in its worker, from the request's head to its last byte sent.";
    private static readonly double[] DurationBounds = [.. VhostTraffic.BucketBounds.Select(b => b / 1e6)];
    private static readonly string[] ClassLabels = ["1xx", "2xx", "3xx", "4xx", "5xx"];

    public void RecordReload(string result, string detail)
    {
        counters.Reload(result);
        _lastReload = new ReloadRecord(DateTime.UtcNow, result, detail);
    }

    /// <summary>A scrape on the metrics listener: answered in the background (never on the dispatcher's serve loop).</summary>
    public void AnswerMetrics(ChildProcess dispatcher, MetricsRequest request) =>
        FireAndForget.Observe(AnswerMetricsAsync(dispatcher, request), log, $"Metrics answer to dispatcher {dispatcher.Pid}");

    /// <summary>A scrape on the metrics listener: gather, render, answer in a sealed memfd (at most two in flight).</summary>
    private async Task AnswerMetricsAsync(ChildProcess dispatcher, MetricsRequest request)
    {
        await Task.Yield(); // never on the dispatcher's serve loop

        if (Interlocked.Increment(ref _metricsInFlight) > 2)
        {
            Interlocked.Decrement(ref _metricsInFlight);
            TrySend(dispatcher, new MetricsReply(request.RequestId, false), []);
            return;
        }

        try
        {
            var text = RenderMetrics(await dispatcherReports.GatherAsync(dispatchers()).ConfigureAwait(false));
            var memfd = SealedBlob.Create("dispatch-metrics", Encoding.UTF8.GetBytes(text));
            try
            {
                TrySend(dispatcher, new MetricsReply(request.RequestId, true), [memfd]);
            }
            finally
            {
                Libc.Close(memfd);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _metricsInFlight);
        }
    }

    private void TrySend<T>(ChildProcess child, T message, int[] fds)
        where T : IWireMessage<T>
    {
        try
        {
            child.Channel.Send(message, fds);
        }
        catch (Exception e) when (e is SysCallException or ObjectDisposedException)
        {
            log.Debug("Could not send {Type} to {Child}: {Reason}", T.Type, child, e.Message);
        }
    }

    internal string RenderMetrics(List<(ChildProcess Dispatcher, bool Retiring, DispatcherStats? Stats)> reports)
    {
        var samples = new Dictionary<string, double>(StringComparer.Ordinal);
        void Add(string key, double value) => samples[key] = samples.GetValueOrDefault(key) + value;
        foreach (var (_, _, stats) in reports)
        {
            foreach (var c in stats?.Counters ?? [])
                Add(c.Key, c.Value);
            foreach (var w in stats?.Workers ?? [])
                Add($"dispatch_worker_open_connections{{pool=\"{Prometheus.Escape(w.Pool)}\",pid=\"{w.Pid}\"}}", w.Open);
        }

        foreach (var (key, value) in counters.Snapshot())
            Add(key, value);
        foreach (var (key, value) in dispatcherReports.Carried)
            Add(key, value);
        var current = config.Current;
        var workers = workerTable.All();
        foreach (var pool in current.Pools.Keys)
            Add($"dispatch_workers{{pool=\"{Prometheus.Escape(pool)}\"}}", workers.Count(w => w.Name == pool));
        var backoff = spawnBackoff.Snapshot();
        foreach (var pool in current.Pools.Keys)
        {
            var state = backoff.GetValueOrDefault(pool);
            Add($"dispatch_pool_start_failures{{pool=\"{Prometheus.Escape(pool)}\"}}", state?.Failures ?? 0);
            Add($"dispatch_pool_backoff_seconds{{pool=\"{Prometheus.Escape(pool)}\"}}", (long)Math.Ceiling(state?.Remaining.TotalSeconds ?? 0));
        }
        foreach (var v in current.Vhosts.Values)
        {
            foreach (var c in v.Certificates)
                samples[$"dispatch_certificate_not_after_timestamp_seconds{{vhost=\"{Prometheus.Escape(v.Name)}\",directory=\"{Prometheus.Escape(c.Directory)}\"}}"] = new DateTimeOffset(c.NotAfter, TimeSpan.Zero).ToUnixTimeSeconds();
        }

        samples["dispatch_config_version"] = config.Version;
        samples["dispatch_last_reload_ok"] = _lastReload is { Result: not "ok" } ? 0 : 1;
        samples["dispatch_master_start_timestamp_seconds"] = new DateTimeOffset(_started).ToUnixTimeSeconds();

        // Per vhost: every vhost of the config, at zero until it has served (so that a rate is defined from the start).
        var traffic = VhostTotals(reports);
        var series = new List<(string Labels, long[] Buckets, double Sum)>();
        foreach (var name in current.Vhosts.Values.Select(v => v.Name).Order(StringComparer.Ordinal))
        {
            var t = traffic.GetValueOrDefault(name) ?? VhostTraffic.Empty(name);
            var labels = $"vhost=\"{Prometheus.Escape(name)}\"";
            for (var i = 0; i < VhostTraffic.Classes; i++)
                samples[$"dispatch_vhost_requests_total{{{labels},code=\"{ClassLabels[i]}\"}}"] = t.Requests[i];
            samples[$"dispatch_vhost_response_bytes_total{{{labels}}}"] = t.BytesSent;
            series.Add((labels, t.Buckets, t.DurationMicros / 1e6));
        }

        return Prometheus.Render(samples, Help) + Prometheus.RenderHistogram(DurationHistogram, DurationHelp, DurationBounds, series);
    }

    /// <summary>
    /// What each vhost of the config served: the traffic of every dispatcher that answered, and of those gone. A vhost
    /// the config does not have (a dispatcher's report of one since removed, or a compromised one's) is left out.
    /// </summary>
    private Dictionary<string, VhostTraffic> VhostTotals(List<(ChildProcess Dispatcher, bool Retiring, DispatcherStats? Stats)> reports)
    {
        var current = config.Current;
        var names = current.Vhosts.Values.Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
        var totals = new Dictionary<string, VhostTraffic>(StringComparer.Ordinal);
        void Add(VhostTraffic t)
        {
            if (names.Contains(t.Vhost))
                totals[t.Vhost] = totals.TryGetValue(t.Vhost, out var sum) ? sum.Plus(t) : t;
        }

        foreach (var (dispatcher, _, stats) in reports)
        {
            if (stats is not null)
            {
                foreach (var t in dispatcherReports.TrafficOf(dispatcher))
                    Add(t);
            }
        }

        foreach (var t in dispatcherReports.CarriedTraffic)
            Add(t);
        return totals;
    }

    /// <summary>The status view for <c>Master status</c>: text for people, or JSON (<paramref name="json"/>).</summary>
    public async Task<string> StatusAsync(bool json)
    {
        var reports = await dispatcherReports.GatherAsync(dispatchers()).ConfigureAwait(false);
        var current = config.Current;
        var now = DateTime.UtcNow;
        var (workers, owners) = workerTable.Snapshot();

        var seen = reports.Where(r => r.Stats is not null).SelectMany(r => r.Stats!.Workers).GroupBy(w => w.Pid).ToDictionary(g => g.Key, g => g.First());
        var traffic = VhostTotals(reports);
        var backoffs = spawnBackoff.Snapshot();
        var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartObject("master");
            w.WriteNumber("pid", Environment.ProcessId);
            w.WriteString("started", _started);
            w.WriteNumber("uptimeSeconds", (long)(now - _started).TotalSeconds);
            w.WriteString("config", current.SourcePath);
            w.WriteNumber("configVersion", config.Version);
            w.WriteEndObject();
            if (_lastReload is { } reload)
            {
                w.WriteStartObject("lastReload");
                w.WriteString("at", reload.At);
                w.WriteString("result", reload.Result);
                w.WriteString("detail", reload.Detail);
                w.WriteEndObject();
            }
            else
            {
                w.WriteNull("lastReload");
            }

            w.WriteStartArray("dispatchers");
            foreach (var (d, retiring, stats) in reports)
            {
                w.WriteStartObject();
                w.WriteNumber("pid", d.Pid);
                w.WriteNumber("uid", d.Uid);
                w.WriteString("state", retiring ? "draining" : "serving");
                w.WriteNumber("ageSeconds", (long)(now - d.Started).TotalSeconds);
                w.WriteBoolean("answered", stats is not null);
                w.WriteStartObject("counters");
                foreach (var c in stats?.Counters ?? [])
                    w.WriteNumber(c.Key, c.Value);
                w.WriteEndObject();
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteStartArray("pools");
            foreach (var p in current.Pools.Values.OrderBy(p => p.Name, StringComparer.Ordinal))
            {
                w.WriteStartObject();
                w.WriteString("name", p.Name);
                w.WriteNumber("uid", p.Uid);
                w.WriteNumber("gid", p.Gid);
                w.WriteNumber("maxWorkers", p.MaxWorkers);
                w.WriteNumber("minSpare", p.MinSpare);
                w.WriteBoolean("oneShot", p.OneShot);
                if (backoffs.TryGetValue(p.Name, out var backoff))
                {
                    w.WriteStartObject("backoff");
                    w.WriteNumber("failures", backoff.Failures);
                    w.WriteNumber("retryInSeconds", Math.Round(backoff.Remaining.TotalSeconds, 1));
                    w.WriteString("lastError", backoff.LastError);
                    w.WriteEndObject();
                }
                else
                {
                    w.WriteNull("backoff");
                }

                w.WriteStartArray("workers");
                foreach (var wk in workers.Where(x => x.Name == p.Name))
                {
                    w.WriteStartObject();
                    w.WriteNumber("pid", wk.Pid);
                    w.WriteNumber("uid", wk.Uid);
                    w.WriteNumber("ageSeconds", (long)(now - wk.Started).TotalSeconds);
                    w.WriteNumber("dispatcher", owners.TryGetValue(wk.Pid, out var o) ? o.Pid : 0);
                    if (seen.TryGetValue(wk.Pid, out var st))
                    {
                        w.WriteNumber("connections", st.Open);
                        w.WriteNumber("handed", st.Handed);
                    }
                    else
                    {
                        w.WriteNull("connections");
                        w.WriteNull("handed");
                    }

                    w.WriteEndObject();
                }

                w.WriteEndArray();
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteStartArray("vhosts");
            foreach (var v in current.Vhosts.Values.OrderBy(v => v.Name, StringComparer.Ordinal))
            {
                w.WriteStartObject();
                w.WriteString("name", v.Name);
                w.WriteStartArray("aliases");
                foreach (var a in v.Aliases)
                    w.WriteStringValue(a);
                w.WriteEndArray();
                w.WriteString("pool", v.Pool);
                w.WriteString("tls", v.TlsMode);
                var t = traffic.GetValueOrDefault(v.Name) ?? VhostTraffic.Empty(v.Name);
                w.WriteStartObject("requests");
                for (var i = 0; i < VhostTraffic.Classes; i++)
                    w.WriteNumber(ClassLabels[i], t.Requests[i]);
                w.WriteEndObject();
                w.WriteNumber("bytesSent", t.BytesSent);
                w.WriteStartArray("certificates");
                foreach (var c in v.Certificates)
                {
                    w.WriteStartObject();
                    w.WriteString("directory", c.Directory);
                    w.WriteString("notAfter", DateTime.SpecifyKind(c.NotAfter, DateTimeKind.Utc));
                    w.WriteNumber("daysLeft", Math.Floor((c.NotAfter - now).TotalDays));
                    w.WriteEndObject();
                }

                w.WriteEndArray();
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteStartObject("counters");
            foreach (var (key, value) in counters.Snapshot())
                w.WriteNumber(key, value);
            w.WriteEndObject();
            w.WriteEndObject();
        }

        var jsonText = Encoding.UTF8.GetString(stream.ToArray());
        return json ? jsonText + "\n" : StatusText.Render(JsonDocument.Parse(jsonText).RootElement);
    }
}
