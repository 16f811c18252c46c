using Dispatch.Platform.Interop;
using Dispatch.Platform.Spawn;
using Dispatch.Wire;
using Dispatch.Wire.Interop;

namespace Dispatch.Platform.Confinement;

/// <summary>
/// The jailed image checks its own jail before serving: each probe path must fail to open on every
/// one of several threads (dedicated threads and thread-pool threads) and from a child process; root
/// must not be regainable. The master kills a child whose proof fails.
/// Each path's existence is reported too (lstat's errno): in a chroot, the master requires that
/// /etc/passwd, /home and other tenants' roots are not merely denied but absent.
/// <para>
/// What it costs, and why it can cost little (docs/coldstart.md): the jail was applied before the exec,
/// so every thread of this image descends from a main thread that already held it (Landlock domains and
/// no_new_privs are inherited by clone and kept across exec; ids are per process). More threads test the
/// same inheritance again, so the threads are started once and each tries every path (not new threads
/// per path), while the child probes run on the calling thread. A child that cannot even be started
/// (Landlock denies the exec of /bin/cat: the common case) fails the same way for every path, whatever
/// the path, so it is started once; where it can run (a pool allowed to execute /bin), one per path.
/// </para>
/// </summary>
public static unsafe class JailProbe
{
    /// <summary>The program a child probe runs: <c>cat -- PATH</c>, which exits 0 only if it could read the path.</summary>
    public const string ChildProgram = "/bin/cat";

    public static JailProof Run(IReadOnlyList<string> paths, int threads)
    {
        ArgumentNullException.ThrowIfNull(paths);
        threads = Math.Max(1, threads);
        var opened = new int[paths.Count];
        var dedicated = threads / 2;
        var pooled = threads - dedicated;
        using var done = new CountdownEvent(threads);
        void Attempt()
        {
            for (var i = 0; i < paths.Count; i++)
            {
                var fd = Libc.Open(paths[i], Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
                if (fd >= 0)
                {
                    Interlocked.Increment(ref opened[i]);
                    Libc.Close(fd);
                }
            }

            done.Signal();
        }

        for (var i = 0; i < dedicated; i++)
            new Thread(Attempt) { IsBackground = true, Name = "jail-probe" }.Start();
        for (var i = 0; i < pooled; i++)
            ThreadPool.UnsafeQueueUserWorkItem(_ => Attempt(), null);

        // Meanwhile, on this thread: the child probes and each path's existence.
        var children = new (string Outcome, bool Opened)[paths.Count];
        string? cannotStart = null;
        var lstatErrors = new int[paths.Count];
        for (var i = 0; i < paths.Count; i++)
        {
            children[i] = cannotStart is not null ? (cannotStart, false) : ProbeFromChild(paths[i], out cannotStart);
            Libc.Stat st;
            lstatErrors[i] = Libc.LStat(paths[i], &st) == 0 ? 0 : Libc.LastError;
        }

        done.Wait();
        var probes = new ProbeResult[paths.Count];
        for (var i = 0; i < paths.Count; i++)
            probes[i] = new ProbeResult(paths[i], threads, Volatile.Read(ref opened[i]), JailProof.TrimOutcome(children[i].Outcome), children[i].Opened);

        uint r, e, s, gr, ge, gs;
        Libc.GetResUid(&r, &e, &s);
        Libc.GetResGid(&gr, &ge, &gs);
        var nnp = Libc.Prctl(Libc.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1;
        return new JailProof(e, ge, Jail.RegainRootRefused(), nnp, probes, lstatErrors);
    }

    /// <summary>
    /// <c>cat -- PATH</c> in a child. <paramref name="cannotStart"/> is set when the child could not be
    /// started at all (which does not depend on the path: every later probe would fail the same way).
    /// </summary>
    private static (string Outcome, bool Opened) ProbeFromChild(string path, out string? cannotStart)
    {
        cannotStart = null;
        int pid;
        try
        {
            pid = Spawner.SpawnPlain(ChildProgram, ["cat", "--", path], ["PATH=/usr/bin:/bin"]);
        }
        catch (SysCallException e)
        {
            cannotStart = $"child could not start: {e.Message}";
            return (cannotStart, false);
        }

        int status;
        while (Libc.WaitPid(pid, &status, 0) < 0)
        {
            if (Libc.LastError != Libc.EINTR)
                return ($"waitpid failed: {Libc.Describe(Libc.LastError)}", false);
        }

        var exited = (status & 0x7f) == 0;
        var code = (status >> 8) & 0xff;
        return exited && code == 0
            ? ("child read it", true)
            : ($"child denied (cat exit {(exited ? code : -1)})", false);
    }
}
