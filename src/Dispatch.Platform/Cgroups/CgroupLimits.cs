using System.Globalization;

namespace Dispatch.Platform.Cgroups;

/// <summary>A pool's cgroup limits; null means unlimited ("max").</summary>
public sealed record CgroupLimits(ulong? MemoryMax, CpuMax? Cpu, ulong? PidsMax)
{
    public const long DefaultPeriodUs = 100_000;

    /// <summary>The controllers whose limit is set.</summary>
    public IEnumerable<CgroupController> Requested
    {
        get
        {
            if (MemoryMax is not null)
                yield return CgroupController.Memory;
            if (Cpu is not null)
                yield return CgroupController.Cpu;
            if (PidsMax is not null)
                yield return CgroupController.Pids;
        }
    }

    public override string ToString() =>
        $"memory.max {MemoryMax?.ToString(CultureInfo.InvariantCulture) ?? "max"}, cpu.max {Cpu?.ToString() ?? "max"}, pids.max {PidsMax?.ToString(CultureInfo.InvariantCulture) ?? "max"}";

    /// <summary>"256M", "1G", "1048576", "max" (binary suffixes K, M, G, T). Error: why not.</summary>
    public static (ulong? Value, string? Error) ParseMemory(string text)
    {
        var t = text.Trim();
        if (t == "max")
            return (null, null);
        ulong scale = 1;
        var digits = t;
        if (t.Length > 0 && "KkMmGgTt".Contains(t[^1], StringComparison.Ordinal))
        {
            scale = char.ToUpperInvariant(t[^1]) switch { 'K' => 1UL << 10, 'M' => 1UL << 20, 'G' => 1UL << 30, _ => 1UL << 40 };
            digits = t[..^1];
        }

        if (!ulong.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var n))
            return (null, $"'{text}' is not a size such as 256M, 2G or a number of bytes (or \"max\")");
        if (n == 0)
            return (null, "must be more than 0 (use \"max\" for no limit)");
        if (n > ulong.MaxValue / scale)
            return (null, $"'{text}' is too large");
        var bytes = n * scale;
        if (bytes < 1UL << 20)
            return (null, $"'{text}' is below 1M: no worker could start within it");
        return (bytes, null);
    }

    /// <summary>"50%" (of one CPU, period 100 ms), "150%", "50000 100000" (quota and period in µs), "max".</summary>
    public static (CpuMax? Value, string? Error) ParseCpu(string text)
    {
        var t = text.Trim();
        if (t == "max")
            return (null, null);
        if (t.EndsWith('%'))
        {
            if (!decimal.TryParse(t[..^1], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var percent) || percent <= 0)
                return (null, $"'{text}' is not a positive percentage of one CPU such as 50% or 200%");
            if (percent < 1 || percent > 100_000)
                return (null, $"'{text}' is outside 1%..100000%");
            return (new CpuMax((long)Math.Round(percent / 100m * DefaultPeriodUs), DefaultPeriodUs), null);
        }

        var parts = t.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length != 2
            || !long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var quota)
            || !long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var period))
            return (null, $"'{text}' is neither a percentage such as 50% nor \"QUOTA PERIOD\" in microseconds such as \"50000 100000\" (or \"max\")");
        if (period is < 1000 or > 1_000_000)
            return (null, $"period {parts[1]} microseconds is outside 1000..1000000");
        if (quota < 1000)
            return (null, $"quota {parts[0]} microseconds is below 1000 (the kernel's minimum)");
        return (new CpuMax(quota, period), null);
    }

    /// <summary>A positive number of tasks (processes and threads together), or "max".</summary>
    public static (ulong? Value, string? Error) ParsePids(string text)
    {
        var t = text.Trim();
        if (t == "max")
            return (null, null);
        if (!long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n))
            return (null, $"'{text}' is not a number of tasks (or \"max\")");
        if (n <= 0)
            return (null, $"{n} tasks: must be at least 1 (use \"max\" for no limit)");
        return ((ulong)n, null);
    }
}
