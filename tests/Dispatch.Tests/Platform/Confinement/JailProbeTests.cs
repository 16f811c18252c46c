using Dispatch.Platform.Confinement;
using Dispatch.Platform.Interop;

namespace Dispatch.Tests.Platform.Confinement;

/// <summary>
/// The jail proof run where there is no jail (this test process): it must see every readable path opened,
/// on every thread and from the child, and so not hold. The end-to-end tests see the same probe deny
/// everything inside real jails; this is what makes them mean something.
/// </summary>
public class JailProbeTests
{
    [Fact]
    public void Without_a_jail_every_thread_and_the_child_read_what_is_readable_and_the_proof_does_not_hold()
    {
        var dir = Directory.CreateTempSubdirectory("jailprobe-");
        try
        {
            var readable = Path.Combine(dir.FullName, "readable");
            File.WriteAllText(readable, "x");
            var missing = Path.Combine(dir.FullName, "missing");
            var proof = JailProbe.Run(["/etc/passwd", missing, readable], 6);

            Assert.Equal(3, proof.Probes.Length);
            foreach (var i in new[] { 0, 2 })
            {
                Assert.Equal(6, proof.Probes[i].ThreadsTried);
                Assert.Equal(6, proof.Probes[i].ThreadsOpened);
                Assert.True(proof.Probes[i].ChildOpened, proof.Probes[i].ChildOutcome);
                Assert.Equal("child read it", proof.Probes[i].ChildOutcome);
                Assert.Equal(0, proof.LStatErrors![i]);
            }

            // A path no one can open is denied on every thread and in the child, and reported absent.
            Assert.Equal(0, proof.Probes[1].ThreadsOpened);
            Assert.False(proof.Probes[1].ChildOpened);
            Assert.Equal("child denied (cat exit 1)", proof.Probes[1].ChildOutcome);
            Assert.Equal(Libc.ENOENT, proof.LStatErrors![1]);
            Assert.False(proof.Holds);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void One_thread_still_probes_every_path()
    {
        var proof = JailProbe.Run(["/etc/passwd", "/"], 1);
        Assert.All(proof.Probes, p => Assert.Equal((1, 1), (p.ThreadsTried, p.ThreadsOpened)));
        Assert.False(proof.Holds);
    }
}
