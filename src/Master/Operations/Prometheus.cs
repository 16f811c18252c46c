namespace Dispatch.Master.Operations;

/// <summary>Prometheus text exposition helpers (format 0.0.4).</summary>
internal static partial class Prometheus
{
    /// <summary>Label value escaping: backslash, double quote and line feed.</summary>
    public static string Escape(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

    /// <summary>
    /// What a dispatcher may report: our own metric names, with at most a few labels whose values carry no
    /// line break. A dispatcher that sends anything else is not believed (the key is dropped and logged).
    /// </summary>
    [System.Text.RegularExpressions.GeneratedRegex("""^dispatch_[a-z_]{1,60}(\{[a-z_]{1,30}="[^"\\\n]{0,120}"(,[a-z_]{1,30}="[^"\\\n]{0,120}"){0,3}\})?$""")]
    public static partial System.Text.RegularExpressions.Regex ReportedKey();

    public static string NameOf(string key)
    {
        var brace = key.IndexOf('{', StringComparison.Ordinal);
        return brace < 0 ? key : key[..brace];
    }

    /// <summary>Renders samples (key → value), one TYPE line per metric name: *_total are counters, the rest gauges.</summary>
    public static string Render(IEnumerable<KeyValuePair<string, double>> samples, IReadOnlyDictionary<string, string> help)
    {
        var sb = new System.Text.StringBuilder();
        foreach (var group in samples.GroupBy(s => NameOf(s.Key)).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            if (help.TryGetValue(group.Key, out var h))
                sb.Append("# HELP ").Append(group.Key).Append(' ').Append(h).Append('\n');
            sb.Append("# TYPE ").Append(group.Key).Append(group.Key.EndsWith("_total", StringComparison.Ordinal) ? " counter\n" : " gauge\n");
            foreach (var s in group.OrderBy(s => s.Key, StringComparer.Ordinal))
                sb.Append(s.Key).Append(' ').Append(s.Value.ToString("R", System.Globalization.CultureInfo.InvariantCulture)).Append('\n');
        }

        return sb.ToString();
    }

    /// <summary>
    /// Renders one histogram family: per series (its labels, without braces), the cumulative buckets at
    /// <paramref name="bounds"/> (seconds) and +Inf, then _sum and _count (the +Inf bucket's count).
    /// </summary>
    /// <param name="series">Each series' labels (<c>vhost="a"</c>), its per-bucket counts (one per bound and one above them), and its sum.</param>
    public static string RenderHistogram(string name, string help, IReadOnlyList<double> bounds, IEnumerable<(string Labels, long[] Buckets, double Sum)> series)
    {
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        var sb = new System.Text.StringBuilder();
        sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
        sb.Append("# TYPE ").Append(name).Append(" histogram\n");
        foreach (var (labels, buckets, sum) in series)
        {
            if (buckets.Length != bounds.Count + 1)
                throw new ArgumentException($"{buckets.Length} buckets for {bounds.Count} bounds", nameof(series));
            long cumulative = 0;
            for (var i = 0; i < buckets.Length; i++)
            {
                cumulative += buckets[i];
                var le = i < bounds.Count ? bounds[i].ToString("R", inv) : "+Inf";
                sb.Append(name).Append("_bucket{").Append(labels).Append(",le=\"").Append(le).Append("\"} ").Append(cumulative.ToString(inv)).Append('\n');
            }

            sb.Append(name).Append("_sum{").Append(labels).Append("} ").Append(sum.ToString("R", inv)).Append('\n');
            sb.Append(name).Append("_count{").Append(labels).Append("} ").Append(cumulative.ToString(inv)).Append('\n');
        }

        return sb.ToString();
    }
}
