using Dispatch.Platform.Cgroups;
using Dispatch.Platform.Hosting;
using Dispatch.Platform.Interop;
using Dispatch.Platform.Spawn;
using Dispatch.Wire;
using Dispatch.Wire.Interop;

namespace Dispatch.Platform.Confinement;

/// <summary>
/// Stage 1 of every jailed child: started as root by <see cref="Spawner"/>, it receives its
/// <see cref="JailSpec"/> on fd 3 and, on the main thread, in this fixed order:
/// <list type="number">
/// <item>cgroups: the pool's groups, created and limited by the master (root-owned files), are joined by
///   writing this pid to each <c>cgroup.procs</c> in the spec, so everything after — the modules, the
///   jailed image, its threads, CGI children — counts against memory.max, cpu.max and pids.max;</item>
/// <item>resource limits (while still allowed to raise hard limits), core dumps off;</item>
/// <item>third-party privilege modules (native libraries, docs/modules.md), in the order of their names (still root);</item>
/// <item>chroot (pools with <c>chroot</c>, see <see cref="Chroot"/>): a private mount namespace, a tmpfs
///   root holding the runtime, our binaries, the system libraries, a minimal /etc, /dev, /proc, a
///   private /tmp and the pool's paths (bound at their own paths, read-only unless listed writable),
///   then pivot_root into it and chdir("/"): every later step, and the exec, see only that tree;</item>
/// <item>capability bounding set and ambient set cleared;</item>
/// <item>supplementary groups, then gid, then uid (setgroups/setresgid/setresuid: glibc applies them to every thread);</item>
/// <item>proof of the drop: real/effective/saved ids all equal the target, and regaining uid 0 or gid 0 fails with EPERM;</item>
/// <item>no_new_privs, not dumpable;</item>
/// <item>Landlock: read the runtime, the binaries and the role's own paths, execute only the binary
///   and the ELF interpreter (plus a pool's CGI directories and <c>landlock.exec</c>), write only /dev/null and a
///   pool's <c>landlock.write</c> directories (each re-checked here to be a directory the pool's uid owns and others
///   cannot write), no TCP bind, TCP connect only to the pool's proxy ports and <c>landlock.connectTcp</c> (on a
///   kernel without Landlock network rules, ABI &lt; 4, TCP is not restricted: the master warns at start and reload), no signals or
///   abstract sockets outside the domain
///   (a chroot pool may turn Landlock off; at least one of the two always applies);</item>
/// <item>execve of its own binary with <c>--jailed</c>: Landlock and no_new_privs bind only the calling
///   thread, so the jail becomes process-wide only in the new image, whose every thread inherits it.</item>
/// </list>
/// Any failure ends the process before it reads a byte from anyone but the master.
/// </summary>
public static unsafe class Jail
{
    public static void RunStage1(ProcessRole role)
    {
        try
        {
            StartupTrace.WriteStage1("stage1-main", ChildBootstrap.MainEnteredMs);
            if (Libc.GetEUid() != 0)
                throw new InvalidOperationException("stage 1 must start as root (it is started by the master)");
            // Not disposed: fd 3 stays open across the exec (and on failure, until the exit).
            var channel = IpcChannel.FromDescriptor(Spawner.ChannelFd, "master");
            JailSpec spec;
            using (var message = channel.ReceiveBlocking(30_000) ?? throw new WireException("master closed the channel before the jail spec"))
                spec = message.Decode<JailSpec>();
            if (spec.Role != role)
                throw new WireException($"jail spec for {spec.Role} sent to a {role}");
            // Before the jail: after a pivot_root, /proc/self/exe names the binary by its old mount.
            var self = Environment.ProcessPath ?? throw new InvalidOperationException("no process path");
            StartupTrace.WriteStage1("stage1-spec");
            Apply(spec);
            StartupTrace.WriteStage1("stage1-exec");
            Console.Out.Flush();
            Console.Error.Flush();
            // The channel descriptor (fd 3) is not CLOEXEC: it is the one thing the new image inherits.
            // Another worker program (a pool's "program") takes this image's place, jailed the same way.
            if (spec.Program.Length > 0)
                Spawner.Exec(spec.Program, [spec.Program, "--jailed"], Spawner.CleanEnvironment());
            Spawner.Exec(self, [Path.GetFileName(self), "--jailed"], Spawner.CleanEnvironment(Spawner.InheritedHeapHardLimit()));
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"FTL {role} stage 1 (pid {Libc.GetPid()}) failed, exiting before serving: {e.Message}");
            Console.Error.Flush();
            Environment.Exit(70);
        }
    }

    public static void Apply(JailSpec spec)
    {
        if (spec.Uid == 0 || spec.Gid == 0 || Array.IndexOf(spec.Groups, 0u) >= 0)
            throw new InvalidOperationException("refusing a jail with uid, gid or a supplementary group 0");

        // First, while root: the pool's cgroups (paths from the master, in root-owned cgroup file systems).
        // A write to cgroup.procs moves the whole process, every thread of it.
        foreach (var procs in spec.CgroupProcs ?? [])
            CgroupTree.WriteFile(procs, Libc.GetPid().ToString(System.Globalization.CultureInfo.InvariantCulture));

        var core = new Libc.RLimit { Cur = 0, Max = 0 };
        if (Libc.SetRLimit(Libc.RLIMIT_CORE, &core) != 0)
            SysCallException.ThrowLast("setrlimit(RLIMIT_CORE)");
        foreach (var limit in spec.Limits)
        {
            var rl = new Libc.RLimit { Cur = limit.Soft, Max = limit.Hard };
            if (Libc.SetRLimit(limit.Resource, &rl) == 0)
                continue;
            var errno = Libc.LastError;
            Libc.RLimit current;
            if (errno != Libc.EPERM || Libc.GetRLimit(limit.Resource, &current) != 0 || limit.Hard <= current.Max)
                throw new SysCallException($"setrlimit({limit.Resource})", errno);
            // Raising a hard limit needs CAP_SYS_RESOURCE, which some containers withhold: keep the
            // current hard limit and say so.
            rl = new Libc.RLimit { Cur = Math.Min(limit.Soft, current.Max), Max = current.Max };
            if (Libc.SetRLimit(limit.Resource, &rl) != 0)
                SysCallException.ThrowLast($"setrlimit({limit.Resource})");
            Console.Error.WriteLine($"WRN resource limit {limit.Resource} capped at the hard limit {current.Max} (asked {limit.Hard}; raising it needs CAP_SYS_RESOURCE)");
        }

        // Third-party privilege modules: still root, before capabilities and ids are dropped.
        // Each is loaded under the same checks as in the master, and its apply runs here, on the main thread.
        foreach (var module in spec.Modules)
        {
            string? problem;
            try
            {
                problem = Modules.ModuleLoader.Load(module.Library).Apply(module.SettingsJson);
            }
            catch (Modules.ModuleException e)
            {
                problem = $"refused: {e.Message}";
            }

            if (problem is not null)
                throw new InvalidOperationException($"privilege module '{module.Name}' ({module.Library}) of pool {spec.Name}: apply failed: {problem}");
        }

        // The chroot: still root (mounts need CAP_SYS_ADMIN), after the modules (which may read host paths).
        if (spec.Chroot is not null)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var binds = Chroot.Enter(spec.Chroot, spec.Uid, spec.Gid, spec.Groups);
            Console.Error.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"DBG chroot: {binds} binds, pivoted into the new root in {clock.Elapsed.TotalMilliseconds:F1} ms"));
        }
        else if (!spec.Landlock)
            throw new InvalidOperationException("refusing a jail with neither Landlock nor a chroot");

        var lastCap = int.Parse(File.ReadAllText("/proc/sys/kernel/cap_last_cap").Trim(), System.Globalization.CultureInfo.InvariantCulture);
        for (var cap = 0; cap <= lastCap; cap++)
        {
            if (Libc.Prctl(Libc.PR_CAPBSET_DROP, (nuint)cap, 0, 0, 0) != 0)
                SysCallException.ThrowLast($"prctl(PR_CAPBSET_DROP, {cap})");
        }

        Libc.Prctl(Libc.PR_CAP_AMBIENT, Libc.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);

        fixed (uint* groups = spec.Groups)
        {
            if (Libc.SetGroups((nuint)spec.Groups.Length, groups) != 0)
                SysCallException.ThrowLast("setgroups");
        }

        if (Libc.SetResGid(spec.Gid, spec.Gid, spec.Gid) != 0)
            SysCallException.ThrowLast($"setresgid({spec.Gid})");
        if (Libc.SetResUid(spec.Uid, spec.Uid, spec.Uid) != 0)
            SysCallException.ThrowLast($"setresuid({spec.Uid})");

        ProveDrop(spec.Uid, spec.Gid);

        if (Libc.Prctl(Libc.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
            SysCallException.ThrowLast("prctl(PR_SET_NO_NEW_PRIVS)");
        if (Libc.Prctl(Libc.PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
            SysCallException.ThrowLast("prctl(PR_SET_DUMPABLE)");
        if (spec.Landlock)
            Landlock.RestrictSelf(spec.ReadPaths, spec.ExecPaths, spec.WritePaths, spec.ConnectPorts, spec.TenantWritePaths ?? [], spec.Uid);
    }

    /// <summary>Ids are what was asked, and root cannot be regained (as OpenSSH's permanently_set_uid checks).</summary>
    public static void ProveDrop(uint uid, uint gid)
    {
        uint r, e, s;
        Libc.GetResUid(&r, &e, &s);
        if (r != uid || e != uid || s != uid)
            throw new InvalidOperationException($"uid drop incomplete: {r}/{e}/{s}, wanted {uid}");
        Libc.GetResGid(&r, &e, &s);
        if (r != gid || e != gid || s != gid)
            throw new InvalidOperationException($"gid drop incomplete: {r}/{e}/{s}, wanted {gid}");
        if (!RegainRootRefused())
            throw new InvalidOperationException("root could be regained after the drop");
    }

    /// <summary>True when setresuid(0) and setresgid(0) both fail with EPERM.</summary>
    public static bool RegainRootRefused()
    {
        var uidRefused = Libc.SetResUid(0, 0, 0) != 0 && Libc.LastError == Libc.EPERM;
        var gidRefused = Libc.SetResGid(0, 0, 0) != 0 && Libc.LastError == Libc.EPERM;
        return uidRefused && gidRefused;
    }
}
