namespace Dispatch.Platform.Cgroups;

/// <summary>CPU bandwidth: <paramref name="QuotaUs"/> microseconds of CPU per <paramref name="PeriodUs"/> (cpu.max; v1: cfs_quota_us/cfs_period_us).</summary>
public readonly record struct CpuMax(long QuotaUs, long PeriodUs)
{
    public override string ToString() => $"{QuotaUs} {PeriodUs}";
}
