using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Dispatch.Master;

/// <summary>The status JSON rendered for a terminal.</summary>
internal static class StatusText
{
    public static string Render(JsonElement s)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        var m = s.GetProperty("master");
        sb.Append(inv, $"Dispatch master {m.GetProperty("pid")}, up {Age(m.GetProperty("uptimeSeconds").GetInt64())}, config {m.GetProperty("config").GetString()} (version {m.GetProperty("configVersion")})\n");
        if (s.GetProperty("lastReload") is { ValueKind: JsonValueKind.Object } r)
            sb.Append(inv, $"Last reload: {r.GetProperty("at").GetDateTime():u} {r.GetProperty("result").GetString()}: {r.GetProperty("detail").GetString()}\n");
        else
            sb.Append("Last reload: none since start\n");
        sb.Append("\nDispatchers:\n");
        foreach (var d in s.GetProperty("dispatchers").EnumerateArray())
        {
            sb.Append(inv, $"  pid {d.GetProperty("pid")}  uid {d.GetProperty("uid")}  {d.GetProperty("state").GetString()}  up {Age(d.GetProperty("ageSeconds").GetInt64())}{(d.GetProperty("answered").GetBoolean() ? string.Empty : "  (did not answer)")}\n");
            foreach (var c in d.GetProperty("counters").EnumerateObject())
                sb.Append(inv, $"      {c.Name} {c.Value}\n");
        }

        sb.Append("\nPools:\n");
        foreach (var p in s.GetProperty("pools").EnumerateArray())
        {
            var ws = p.GetProperty("workers").EnumerateArray().ToList();
            sb.Append(inv, $"  {p.GetProperty("name").GetString()}  uid {p.GetProperty("uid")} gid {p.GetProperty("gid")}  {ws.Count}/{p.GetProperty("maxWorkers")} workers{(p.GetProperty("oneShot").GetBoolean() ? "  one-shot" : string.Empty)}\n");
            if (p.TryGetProperty("backoff", out var b) && b.ValueKind == JsonValueKind.Object)
                sb.Append(inv, $"    backing off: {b.GetProperty("failures")} failed start(s), next attempt in {b.GetProperty("retryInSeconds")} s; last error: {b.GetProperty("lastError").GetString()}\n");
            foreach (var w in ws)
            {
                var conns = w.GetProperty("connections").ValueKind == JsonValueKind.Null ? "?" : w.GetProperty("connections").ToString();
                var handed = w.GetProperty("handed").ValueKind == JsonValueKind.Null ? "?" : w.GetProperty("handed").ToString();
                sb.Append(inv, $"    worker pid {w.GetProperty("pid")}  uid {w.GetProperty("uid")}  up {Age(w.GetProperty("ageSeconds").GetInt64())}  connections {conns}  handed {handed}\n");
            }
        }

        sb.Append("\nVhosts:\n");
        foreach (var v in s.GetProperty("vhosts").EnumerateArray())
        {
            sb.Append(inv, $"  {v.GetProperty("name").GetString()}  pool {v.GetProperty("pool").GetString()}  tls {v.GetProperty("tls").GetString()}");
            if (v.TryGetProperty("requests", out var requests))
            {
                var classes = requests.EnumerateObject().Where(c => c.Value.GetInt64() > 0).Select(c => $"{c.Name} {c.Value}").ToList();
                sb.Append(inv, $"  requests {(classes.Count == 0 ? "0" : string.Join(" ", classes))}  sent {v.GetProperty("bytesSent")} bytes");
            }

            sb.Append('\n');
            foreach (var c in v.GetProperty("certificates").EnumerateArray())
                sb.Append(inv, $"      certificate {c.GetProperty("directory").GetString()} expires {c.GetProperty("notAfter").GetDateTime():u} ({c.GetProperty("daysLeft")} days)\n");
        }

        sb.Append("\nCounters:\n");
        foreach (var c in s.GetProperty("counters").EnumerateObject())
            sb.Append(inv, $"  {c.Name} {c.Value}\n");
        return sb.ToString();
    }

    private static string Age(long seconds) =>
        seconds < 60 ? $"{seconds}s" : seconds < 3600 ? $"{seconds / 60}m{seconds % 60}s" : seconds < 86400 ? $"{seconds / 3600}h{seconds % 3600 / 60}m" : $"{seconds / 86400}d{seconds % 86400 / 3600}h";
}
