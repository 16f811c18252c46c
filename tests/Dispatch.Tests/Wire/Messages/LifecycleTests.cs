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

    /// <summary>
    /// The proof of the largest probe list the master sends (<see cref="JailProof.MaxProbes"/> paths,
    /// <see cref="JailProof.MaxProbeBytes"/> bytes of them, each probe's outcome at its most) fits one datagram: the
    /// limits are what the datagram leaves. And a proof over the bytes is refused.
    /// </summary>
    [Fact]
    public void The_proof_of_the_largest_probe_list_fits_a_datagram_and_one_over_its_bytes_is_refused()
    {
        // 12 long paths and 52 of one byte ("/"): 64 paths, 49152 bytes.
        var paths = MasterDispatcherTests.ProbePaths(JailProof.MaxProbeBytes - (JailProof.MaxProbes - 12));
        Assert.Equal(12, paths.Length);
        paths = [.. paths, .. Enumerable.Repeat("/", JailProof.MaxProbes - 12)];
        Assert.Equal(JailProof.MaxProbes, paths.Length);
        Assert.Equal(JailProof.MaxProbeBytes, paths.Sum(p => p.Length));
        var outcome = new string('x', JailProof.MaxOutcomeBytes);
        var proof = new JailProof(10001, 10001, true, true, [.. paths.Select(p => new ProbeResult(p, 256, 0, outcome, false))], [.. paths.Select(_ => 13)]);
        var bytes = WireBytes.Of(proof);
        Assert.True(IpcChannel.HeaderSize + bytes.Length <= IpcChannel.MaxDatagram, $"{bytes.Length} bytes");
        Assert.Equal(paths, WireBytes.Decode<JailProof>(bytes).Probes.Select(p => p.Path));

        var over = MasterDispatcherTests.ProbePaths(JailProof.MaxProbeBytes + 1);
        WireBytes.Refused<JailProof>(
            WireBytes.Of(new JailProof(10001, 10001, true, true, [.. over.Select(p => new ProbeResult(p, 2, 0, "denied", false))])),
            $"JailProof probes: {JailProof.MaxProbeBytes + 1} bytes of paths in all exceed the limit of {JailProof.MaxProbeBytes}");
    }

    [Theory]
    [InlineData("child denied (cat exit 1)", "child denied (cat exit 1)")]
    [InlineData("", "")]
    public void A_short_outcome_is_kept_as_it_is(string outcome, string kept) => Assert.Equal(kept, JailProof.TrimOutcome(outcome));

    private static readonly string[] Characters = ["é", "😀", "x"];

    [Fact]
    public void A_long_outcome_is_cut_to_its_bytes_on_a_character_boundary()
    {
        Assert.Equal(new string('x', JailProof.MaxOutcomeBytes), JailProof.TrimOutcome(new string('x', 100_000)));
        // 127 ASCII bytes then a 2-byte 'é': the 'é' would make 129, so it goes.
        Assert.Equal(new string('x', 127), JailProof.TrimOutcome(new string('x', 127) + "é" + "yyy"));
        // 126 bytes then a surrogate pair (4 bytes): not split in half.
        Assert.Equal(new string('x', 126), JailProof.TrimOutcome(new string('x', 126) + "😀"));
        Assert.All(Characters, c => Assert.True(System.Text.Encoding.UTF8.GetByteCount(JailProof.TrimOutcome(string.Concat(Enumerable.Repeat(c, 200)))) <= JailProof.MaxOutcomeBytes));
    }
}
