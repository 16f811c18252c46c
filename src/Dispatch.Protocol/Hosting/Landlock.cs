using System.Runtime.InteropServices;
using Dispatch.Protocol.Interop;

namespace Dispatch.Protocol.Hosting;

/// <summary>
/// Landlock filesystem, network and scope rules for the calling thread (and, after an exec, the whole
/// new image). Handles every right the kernel's ABI knows, so anything not granted is denied.
/// </summary>
public static unsafe class Landlock
{
    private const int SysCreateRuleset = 444;
    private const int SysAddRule = 445;
    private const int SysRestrictSelf = 446;
    private const int CreateRulesetVersion = 1;
    private const int RulePathBeneath = 1;

    private const ulong Execute = 1 << 0;
    private const ulong WriteFile = 1 << 1;
    private const ulong ReadFile = 1 << 2;
    private const ulong ReadDir = 1 << 3;
    private const ulong Truncate = 1 << 14;
    private const ulong IoctlDev = 1 << 15;
    private const ulong FileRights = Execute | WriteFile | ReadFile | Truncate | IoctlDev;

    [StructLayout(LayoutKind.Sequential)]
    private struct RulesetAttr
    {
        public ulong HandledFs;
        public ulong HandledNet;
        public ulong Scoped;
    }

    [StructLayout(LayoutKind.Sequential, Pack = 1)]
    private struct NetPortAttr
    {
        public ulong AllowedAccess;
        public ulong Port;
    }

    [StructLayout(LayoutKind.Sequential, Pack = 1)]
    private struct PathBeneathAttr
    {
        public ulong AllowedAccess;
        public int ParentFd;
    }

    /// <summary>The kernel's Landlock ABI version, or 0 when Landlock is unavailable.</summary>
    public static int AbiVersion()
    {
        var v = Libc.Syscall4(SysCreateRuleset, 0, 0, CreateRulesetVersion, 0);
        return v < 0 ? 0 : (int)v;
    }

    /// <summary>
    /// Restricts the calling thread: read (and list) beneath <paramref name="readPaths"/>, execute the
    /// files in <paramref name="execPaths"/>, write beneath <paramref name="writePaths"/>; no TCP bind, TCP
    /// connect only to <paramref name="connectPorts"/>; no abstract Unix sockets or signals outside the domain. no_new_privs must be set.
    /// </summary>
    public static void RestrictSelf(IReadOnlyList<string> readPaths, IReadOnlyList<string> execPaths, IReadOnlyList<string> writePaths, IReadOnlyList<ushort>? connectPorts = null)
    {
        var abi = AbiVersion();
        if (abi < 1)
            throw new InvalidOperationException("Landlock is not available on this kernel; refusing to run unconfined");

        ulong handledFs = (1UL << 13) - 1; // ABI 1: bits 0-12
        if (abi >= 2)
            handledFs |= 1UL << 13; // REFER
        if (abi >= 3)
            handledFs |= Truncate;
        if (abi >= 5)
            handledFs |= IoctlDev;
        var attr = new RulesetAttr
        {
            HandledFs = handledFs,
            HandledNet = abi >= 4 ? 3UL : 0, // BIND_TCP | CONNECT_TCP: only the listed connect ports granted
            Scoped = abi >= 6 ? 3UL : 0,      // ABSTRACT_UNIX_SOCKET | SIGNAL
        };
        var attrSize = abi >= 6 ? 24 : abi >= 4 ? 16 : 8;
        var ruleset = (int)Libc.Syscall4(SysCreateRuleset, (nint)(&attr), attrSize, 0, 0);
        if (ruleset < 0)
            SysCallException.ThrowLast("landlock_create_ruleset");
        try
        {
            foreach (var p in readPaths)
                AddRule(ruleset, p, ReadFile | ReadDir, handledFs);
            foreach (var p in execPaths)
                AddRule(ruleset, p, ReadFile | Execute, handledFs);
            foreach (var p in writePaths)
                AddRule(ruleset, p, ReadFile | ReadDir | WriteFile | Truncate | ((1UL << 13) - 1 & ~Execute), handledFs);
            if (abi >= 4)
            {
                foreach (var port in connectPorts ?? [])
                {
                    var rule = new NetPortAttr { AllowedAccess = 2 /* CONNECT_TCP */, Port = port };
                    if (Libc.Syscall4(SysAddRule, ruleset, 2 /* LANDLOCK_RULE_NET_PORT */, (nint)(&rule), 0) != 0)
                        throw new SysCallException($"landlock_add_rule(tcp connect {port})", Libc.LastError);
                }
            }
            if (Libc.Syscall4(SysRestrictSelf, ruleset, 0, 0, 0) != 0)
                SysCallException.ThrowLast("landlock_restrict_self");
        }
        finally
        {
            Libc.Close(ruleset);
        }
    }

    private static void AddRule(int ruleset, string path, ulong access, ulong handled)
    {
        var fd = Libc.Open(path, Libc.O_PATH | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            var errno = Libc.LastError;
            if (errno == Libc.ENOENT)
                return; // Nothing there to allow.
            throw new SysCallException($"open({path}, O_PATH) for a Landlock rule", errno);
        }

        try
        {
            if (!Directory.Exists(path))
                access &= FileRights; // A rule on a file must not carry directory rights.
            var rule = new PathBeneathAttr { AllowedAccess = access & handled, ParentFd = fd };
            if (Libc.Syscall4(SysAddRule, ruleset, RulePathBeneath, (nint)(&rule), 0) != 0)
                throw new SysCallException($"landlock_add_rule({path})", Libc.LastError);
        }
        finally
        {
            Libc.Close(fd);
        }
    }
}
