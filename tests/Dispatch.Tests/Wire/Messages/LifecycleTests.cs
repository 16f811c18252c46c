using Dispatch.Wire;

namespace Dispatch.Tests.Wire.Messages;

/// <summary>JailSpec and JailProof (Messages/Lifecycle.cs) refuse, at decode time, values their layouts rule out.</summary>
public class LifecycleTests
{
    private static JailSpec Spec(ProcessRole role, params ResourceLimit[] limits) =>
        new(role, 10001, 10001, [], ["/srv/a"], [], [], limits, "a", [], []);

    [Fact]
    public void A_jail_spec_within_its_layout_is_accepted()
    {
        var spec = WireBytes.Decode<JailSpec>(WireBytes.Of(Spec(ProcessRole.Worker, new ResourceLimit(7, 1024, 4096), new ResourceLimit(6, 64, 64))));
        Assert.Equal([new ResourceLimit(7, 1024, 4096), new ResourceLimit(6, 64, 64)], spec.Limits);
        Assert.Equal(ProcessRole.Dispatcher, WireBytes.Decode<JailSpec>(WireBytes.Of(Spec(ProcessRole.Dispatcher))).Role);
    }

    [Fact]
    public void A_jail_spec_for_a_role_that_does_not_exist_is_refused()
    {
        var payload = WireBytes.Of(Spec(ProcessRole.Worker));
        Assert.Equal((byte)ProcessRole.Worker, payload[0]);
        payload[0] = 9;
        WireBytes.Refused<JailSpec>(payload, "JailSpec role: unknown role 9");
        payload[0] = 0;
        WireBytes.Refused<JailSpec>(payload, "JailSpec role: unknown role 0");
    }

    [Fact]
    public void A_resource_limit_on_no_resource_above_its_hard_limit_or_twice_is_refused()
    {
        WireBytes.Refused<JailSpec>(WireBytes.Of(Spec(ProcessRole.Worker, new ResourceLimit(16, 1, 1))), "JailSpec limits[0]: unknown resource 16");
        WireBytes.Refused<JailSpec>(WireBytes.Of(Spec(ProcessRole.Worker, new ResourceLimit(7, 10, 1024), new ResourceLimit(7, 4096, 2048))), "JailSpec limits[1]: resource 7 has a soft limit 4096 above its hard limit 2048");
        WireBytes.Refused<JailSpec>(WireBytes.Of(Spec(ProcessRole.Worker, new ResourceLimit(7, 10, 10), new ResourceLimit(6, 1, 1), new ResourceLimit(7, 20, 20))), "JailSpec limits[2]: resource 7 is already limits[0]");
    }

    [Fact]
    public void A_jail_proof_with_negative_thread_counts_more_threads_opened_than_tried_or_a_negative_errno_is_refused()
    {
        var good = new ProbeResult("/etc/passwd", 8, 0, "child denied", false);
        Assert.Equal([good], WireBytes.Decode<JailProof>(WireBytes.Of(new JailProof(10001, 10001, true, true, [good], [2]))).Probes);
        WireBytes.Refused<JailProof>(WireBytes.Of(new JailProof(10001, 10001, true, true, [good, good with { ThreadsOpened = -1 }])), "JailProof probes[1] (/etc/passwd): -1 of 8 threads opened it");
        WireBytes.Refused<JailProof>(WireBytes.Of(new JailProof(10001, 10001, true, true, [good with { ThreadsTried = -8, ThreadsOpened = -8 }])), "JailProof probes[0] (/etc/passwd): -8 of -8 threads");
        WireBytes.Refused<JailProof>(WireBytes.Of(new JailProof(10001, 10001, true, true, [good with { ThreadsOpened = 9 }])), "9 of 8 threads opened it");
        WireBytes.Refused<JailProof>(WireBytes.Of(new JailProof(10001, 10001, true, true, [good], [-2])), "JailProof lstat result [0]: -2 is not an errno");
    }
}
