using Dispatch.Protocol.Interop;
using Dispatch.Protocol.Wire;

namespace Dispatch.Protocol.Hosting;

/// <summary>
/// The jailed image checks its own jail before serving: each probe path must fail to open on every
/// one of many threads (dedicated threads and thread-pool threads, since Landlock is per thread) and
/// from a child process; root must not be regainable. The master kills a child whose proof fails.
/// Each path's existence is reported too (lstat's errno): in a chroot, the master requires that
/// /etc/passwd, /home and other tenants' roots are not merely denied but absent.
/// </summary>
public static unsafe class JailProbe
{
    public static JailProof Run(IReadOnlyList<string> paths, int threads)
    {
        var probes = new ProbeResult[paths.Count];
        var lstatErrors = new int[paths.Count];
        for (var i = 0; i < paths.Count; i++)
        {
            probes[i] = ProbePath(paths[i], threads);
            Libc.Stat st;
            lstatErrors[i] = Libc.LStat(paths[i], &st) == 0 ? 0 : Libc.LastError;
        }

        uint r, e, s, gr, ge, gs;
        Libc.GetResUid(&r, &e, &s);
        Libc.GetResGid(&gr, &ge, &gs);
        var nnp = Libc.Prctl(Libc.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1;
        return new JailProof(e, ge, Jail.RegainRootRefused(), nnp, probes, lstatErrors);
    }

    private static ProbeResult ProbePath(string path, int threads)
    {
        var opened = 0;
        var dedicated = threads / 2;
        var pooled = threads - dedicated;
        using var done = new CountdownEvent(threads);
        void Attempt()
        {
            var fd = Libc.Open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
            if (fd >= 0)
            {
                Interlocked.Increment(ref opened);
                Libc.Close(fd);
            }

            done.Signal();
        }

        for (var i = 0; i < dedicated; i++)
            new Thread(Attempt) { IsBackground = true, Name = "jail-probe" }.Start();
        for (var i = 0; i < pooled; i++)
            ThreadPool.UnsafeQueueUserWorkItem(_ => Attempt(), null);
        done.Wait();
        var (outcome, childOpened) = ProbeFromChild(path);
        return new ProbeResult(path, threads, opened, outcome, childOpened);
    }

    private static (string Outcome, bool Opened) ProbeFromChild(string path)
    {
        int pid;
        try
        {
            pid = Spawner.SpawnPlain("/bin/cat", ["cat", "--", path], ["PATH=/usr/bin:/bin"]);
        }
        catch (SysCallException e)
        {
            return ($"child could not start: {e.Message}", false);
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
