using Dispatch.Master.Children;
using Dispatch.Master.Config;
using Dispatch.Master.Tests.Support;
using Dispatch.Platform.Interop;
using Dispatch.Wire;

namespace Dispatch.Master.Tests.Children;

/// <summary>What a child's jail holds and what it must prove it cannot open, from the config alone.</summary>
public class JailSpecsTests
{
    [Fact]
    public void A_worker_proves_it_cannot_open_the_other_tenant_s_root_uploads_keys_and_the_config_but_not_its_own()
    {
        var config = TwoTenants.Build();
        var pool = config.Pools["a"];

        var jail = JailSpecs.Worker(config, pool, TwoTenants.VhostsOf(config, "a"), "/run/dispatch/php-a", []);

        Assert.Contains("/srv/b", jail.Probes);
        Assert.Contains("/srv/b-uploads", jail.Probes);
        Assert.Contains("/etc/passwd", jail.Probes);
        Assert.Contains(config.SourcePath, jail.Probes);
        Assert.Contains(config.Vhosts["b.example"].Certificates.Select(c => Path.Combine(c.Directory, "privkey.pem")).First(), jail.Probes);
        Assert.DoesNotContain("/srv/a", jail.Probes);
        Assert.DoesNotContain("/srv/a-uploads", jail.Probes);
        Assert.Empty(jail.Absent);
        Assert.Equal(["a.example"], jail.Vhosts.Select(v => v.Name));
        Assert.Equal(ProcessRole.Worker, jail.Spec.Role);
        Assert.Equal(pool.Uid, jail.Spec.Uid);
        Assert.Contains("/srv/a", jail.Spec.ReadPaths);
        Assert.DoesNotContain("/srv/b", jail.Spec.ReadPaths);
        Assert.Contains("/srv/a-uploads", jail.Spec.TenantWritePaths!);
        Assert.Null(jail.Spec.Chroot);
    }

    [Fact]
    public void In_a_chroot_the_other_tenant_s_root_home_and_passwd_must_be_absent_not_merely_denied()
    {
        var config = TwoTenants.Build(p => p with { Chroot = new ChrootConfig(1 << 20, [], []) });
        var pool = config.Pools["a"];

        var jail = JailSpecs.Worker(config, pool, TwoTenants.VhostsOf(config, "a"), "/run/dispatch/php-a", []);

        Assert.Equal(["/etc/passwd", "/home", "/srv/b"], jail.Absent);
        Assert.Contains("/home", jail.Probes);
        Assert.NotNull(jail.Spec.Chroot);
        Assert.Contains("/srv/a", jail.Spec.Chroot!.ReadOnly);
        Assert.DoesNotContain("/srv/b", jail.Spec.Chroot.ReadOnly);
        Assert.Contains("/tmp", jail.Spec.WritePaths);
    }

    [Fact]
    public void The_dispatcher_reads_no_tenant_s_root_and_proves_it_cannot_open_any()
    {
        var config = TwoTenants.Build();

        var spec = JailSpecs.Dispatcher(config);
        var probes = JailSpecs.ProbePaths(config, []);

        Assert.Equal(ProcessRole.Dispatcher, spec.Role);
        Assert.Equal(config.Dispatcher.Uid, spec.Uid);
        Assert.Contains(spec.Limits, l => l.Resource == Libc.RLIMIT_NOFILE && l.Soft == config.Dispatcher.NoFile);
        Assert.DoesNotContain(spec.ReadPaths, p => p.StartsWith("/srv/", StringComparison.Ordinal));
        Assert.Contains("/srv/a", probes);
        Assert.Contains("/srv/b", probes);
    }

    [Theory]
    [InlineData(1UL << 30, 4, 192UL << 20)] // three quarters of a quarter of 1 GiB
    [InlineData(64UL << 20, 8, 32UL << 20)] // 6 MiB each would be too little: the floor
    public void A_worker_s_heap_limit_is_its_share_of_the_pool_s_memoryMax(ulong memoryMax, int maxWorkers, ulong expected)
    {
        var pool = Samples.Make<PoolConfig>(1) with { MaxWorkers = maxWorkers, Cgroup = new Dispatch.Platform.Cgroups.CgroupLimits(memoryMax, null, null) };

        Assert.Equal(expected, JailSpecs.WorkerHeapHardLimit(pool));
        Assert.Null(JailSpecs.WorkerHeapHardLimit(pool with { Cgroup = null }));
    }
}
