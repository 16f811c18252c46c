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

    /// <summary>
    /// The most <c>jailProbe.paths</c> the config accepts, with every kind of foreign path at its most (ten tenants, each
    /// with its root, key, logs and write directory), makes probe lists the children's decoders take: at most
    /// <see cref="JailProof.MaxProbes"/>, reached exactly by a chroot worker (which also probes /home). One more path
    /// would be refused there, so the config refuses it (ConfigAndStartupTests, "more probe paths than a proof holds").
    /// </summary>
    [Fact]
    public void The_most_probe_paths_the_config_accepts_fill_a_childs_probe_list_and_no_more()
    {
        var sample = TwoTenants.Build();
        var tenants = Enumerable.Range(0, 10).Select(i => $"t{i}").ToList();
        var certificate = Samples.Make<Certificates.LoadedCertificate>(1);
        var config = sample with
        {
            Pools = tenants.ToDictionary(t => t, t => sample.Pools["a"] with { Name = t, LandlockWrite = [$"/srv/{t}-uploads"], Chroot = new ChrootConfig(1 << 20, [], []) }),
            Vhosts = tenants.ToDictionary(t => $"{t}.example", t => sample.Vhosts["a.example"] with
            {
                Name = $"{t}.example",
                Pool = t,
                Root = $"/srv/{t}",
                Certificates = [certificate with { Directory = $"/etc/letsencrypt/live/{t}.example" }],
                AccessLog = $"/var/log/dispatch/{t}.log",
                ErrorLog = $"/var/log/dispatch/{t}.error.log",
            }),
            JailProbe = new JailProbeConfig([.. Enumerable.Range(0, JailProbeConfig.MaxPaths).Select(i => $"/etc/probe{i}")], 2),
        };

        var dispatcher = JailSpecs.ProbePaths(config, []);
        Assert.Equal(JailProof.MaxProbes - 1, dispatcher.Length); // no /home: the dispatcher has no chroot
        foreach (var t in tenants)
        {
            var worker = JailSpecs.Worker(config, config.Pools[t], TwoTenants.VhostsOf(config, t), $"/run/dispatch/php-{t}", []);
            Assert.Equal(JailProof.MaxProbes, worker.Probes.Length);
        }

        Assert.Equal(29, JailProbeConfig.MaxPaths);
    }

    /// <summary>
    /// The same worst case in bytes: ten tenants whose roots, key directories, logs and write directories are paths of
    /// about 4000 bytes, and <c>jailProbe.paths</c> of <see cref="JailProbeConfig.MaxTotalBytes"/> bytes. Every child's
    /// probe list stays within <see cref="JailProof.MaxProbeBytes"/> (the master leaves out own probes past its share,
    /// never one of the config's), and the messages that carry it fit a datagram: the set-ups and the proof that echoes
    /// it, each outcome at its most. Before, the lists held every such path (over 130 KB) and no set-up could be sent.
    /// </summary>
    [Fact]
    public void The_largest_probe_lists_fit_the_set_up_messages_and_the_proof()
    {
        var sample = TwoTenants.Build();
        var tenants = Enumerable.Range(0, 10).Select(i => $"t{i}").ToList();
        var certificate = Samples.Make<Certificates.LoadedCertificate>(1);
        string Long(string prefix, string t) => $"/{prefix}/{new string(t[1], 3990)}/{t}";
        string[] configured = [.. Enumerable.Range(0, JailProbeConfig.MaxPaths).Select(i => $"/etc/probe{i:D2}/" + new string('p', (JailProbeConfig.MaxTotalBytes / JailProbeConfig.MaxPaths) - 13))];
        Assert.True(configured.Sum(p => p.Length) <= JailProbeConfig.MaxTotalBytes);
        var config = sample with
        {
            Pools = tenants.ToDictionary(t => t, t => sample.Pools["a"] with { Name = t, LandlockWrite = [Long("w", t)], Chroot = new ChrootConfig(1 << 20, [], []) }),
            Vhosts = tenants.ToDictionary(t => $"{t}.example", t => sample.Vhosts["a.example"] with
            {
                Name = $"{t}.example",
                Pool = t,
                Root = Long("srv", t),
                Certificates = [certificate with { Directory = Long("etc/letsencrypt/live", t) }],
                AccessLog = Long("var/log", t),
                ErrorLog = Long("var/log/error", t),
            }),
            JailProbe = new JailProbeConfig([.. configured], 2),
        };

        var dispatcher = JailSpecs.ProbePaths(config, []);
        Fits(dispatcher, configured);
        Fits(new DispatcherSetup([new ListenerInfo("http", "[::]:80", ["10.0.0.0/8"]), new ListenerInfo("tls", "[::]:443", []), new ListenerInfo("metrics", "127.0.0.1:9187", [])], dispatcher, 256));
        foreach (var t in tenants)
        {
            var worker = JailSpecs.Worker(config, config.Pools[t], TwoTenants.VhostsOf(config, t), $"/run/dispatch/php-{t}", []);
            Fits(worker.Probes, configured);
            Assert.Contains("/home", worker.Probes);
            Assert.All(worker.Absent, a => Assert.Contains(a, worker.Probes));
            Fits(new WorkerSetup(t, 7, [], worker.Probes, 256, 64)); // its pool JSON in a memfd (WorkerSetup.Inline decides)
        }
    }

    /// <summary>Every path of <paramref name="configured"/> is probed, and the list is within the proof's bytes, each path within its own, and the proof fits.</summary>
    private static void Fits(string[] probes, string[] configured)
    {
        Assert.All(configured, c => Assert.Contains(c, probes));
        Assert.InRange(probes.Sum(p => System.Text.Encoding.UTF8.GetByteCount(p)), 1, JailProof.MaxProbeBytes);
        Assert.All(probes, p => Assert.InRange(System.Text.Encoding.UTF8.GetByteCount(p), 1, JailProof.MaxProbePathBytes));
        Assert.InRange(probes.Length, 1, JailProof.MaxProbes);
        Fits(new JailProof(10001, 10001, true, true, [.. probes.Select(p => new ProbeResult(p, 256, 0, new string('x', JailProof.MaxOutcomeBytes), false))], [.. probes.Select(_ => 13)]));
    }

    /// <summary>The message as <see cref="IpcChannel"/> sends it: its encoder refuses what does not fit the datagram.</summary>
    private static void Fits<T>(T message)
        where T : IWireMessage<T>
    {
        var writer = new WireWriter(new byte[IpcChannel.MaxDatagram - IpcChannel.HeaderSize]);
        message.Encode(ref writer);
        Assert.InRange(writer.Length, 1, IpcChannel.MaxDatagram - IpcChannel.HeaderSize);
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
