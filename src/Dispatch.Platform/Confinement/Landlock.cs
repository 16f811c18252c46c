using System.Runtime.InteropServices;
using Dispatch.Platform.Interop;
using Dispatch.Wire.Interop;

namespace Dispatch.Platform.Confinement;

/// <summary>
/// Landlock filesystem, network and scope rules for the calling thread (and, after an exec, the whole
/// new image). Handles every right the kernel's ABI knows, so anything not granted is denied.
/// </summary>
/// <remarks>
/// <para>Rights per kind of rule: <b>read</b> (files and listings beneath), <b>exec</b> (read and execute
/// beneath), <b>write</b> (read, list, write, truncate, create and remove files, directories, symlinks, FIFOs and
/// sockets, and rename/link within (REFER) — never execute, never device nodes). A pool's <c>landlock.write</c>
/// directories are checked again here, on the very descriptor the rule is built from (after the uid drop): each must
/// be a directory owned by the pool's uid and not writable by others, so a path swapped after the config check can
/// only name another directory the tenant itself owns.</para>
/// <para>Network (ABI 4+): TCP bind is always denied; TCP connect only to the listed ports — on any address:
/// Landlock matches ports, not addresses. On a kernel with ABI 1-3 there are no network rules at all: TCP is then
/// not restricted by Landlock, which <see cref="NetworkWarning"/> says in words.</para>
/// </remarks>
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
    private const ulong RemoveDir = 1 << 4;
    private const ulong RemoveFile = 1 << 5;
    private const ulong MakeDir = 1 << 7;
    private const ulong MakeReg = 1 << 8;
    private const ulong MakeSock = 1 << 9;
    private const ulong MakeFifo = 1 << 10;
    private const ulong MakeSym = 1 << 12;
    private const ulong Refer = 1 << 13;
    private const ulong Truncate = 1 << 14;
    private const ulong IoctlDev = 1 << 15;
    private const ulong FileRights = Execute | WriteFile | ReadFile | Truncate | IoctlDev;

    /// <summary>What a write rule grants: everything to manage files beneath, but no execute and no device nodes.</summary>
    private const ulong WriteRights = ReadFile | ReadDir | WriteFile | Truncate | RemoveDir | RemoveFile | MakeDir | MakeReg | MakeSock | MakeFifo | MakeSym | Refer;

    /// <summary>The first Landlock ABI with TCP bind/connect rules.</summary>
    public const int NetworkAbi = 4;

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
    /// Null when the kernel's Landlock can restrict TCP as asked; else a warning for the log: with ABI &lt; 4 there are
    /// no network rules, so TCP bind and connect are not restricted at all (the listed ports are moot).
    /// </summary>
    public static string? NetworkWarning(int abi, IReadOnlyCollection<ushort> connectPorts)
    {
        ArgumentNullException.ThrowIfNull(connectPorts);
        if (abi >= NetworkAbi)
            return null;
        var listed = connectPorts.Count == 0 ? "no TCP port is listed" : $"TCP connect was to be limited to port(s) {string.Join(", ", connectPorts)}";
        return $"Landlock ABI {abi} has no network rules (ABI {NetworkAbi}, Linux 6.7, needed): {listed}, but TCP bind and connect are NOT restricted on this kernel";
    }

    /// <summary>
    /// Restricts the calling thread: read (and list) beneath <paramref name="readPaths"/>, execute the
    /// files in <paramref name="execPaths"/>, write beneath <paramref name="writePaths"/>; no TCP bind, TCP
    /// connect only to <paramref name="connectPorts"/>; no abstract Unix sockets or signals outside the domain. no_new_privs must be set.
    /// </summary>
    public static void RestrictSelf(IReadOnlyList<string> readPaths, IReadOnlyList<string> execPaths, IReadOnlyList<string> writePaths, IReadOnlyList<ushort>? connectPorts = null) =>
        RestrictSelf(readPaths, execPaths, writePaths, connectPorts, [], 0);

    /// <summary>
    /// As above, plus write beneath <paramref name="tenantWritePaths"/>: directories that must be owned by
    /// <paramref name="owner"/> and not writable by others, checked on the descriptor the rule is built from.
    /// </summary>
    public static void RestrictSelf(
        IReadOnlyList<string> readPaths, IReadOnlyList<string> execPaths, IReadOnlyList<string> writePaths, IReadOnlyList<ushort>? connectPorts, IReadOnlyList<string> tenantWritePaths, uint owner)
    {
        ArgumentNullException.ThrowIfNull(tenantWritePaths);
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
                AddRule(ruleset, p, WriteRights, handledFs);
            foreach (var p in tenantWritePaths)
                AddRule(ruleset, p, WriteRights, handledFs, owner);
            if (abi >= NetworkAbi)
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

    private static void AddRule(int ruleset, string path, ulong access, ulong handled, uint? owner = null)
    {
        var fd = Libc.Open(path, Libc.O_PATH | Libc.O_CLOEXEC | (owner is null ? 0 : Libc.O_DIRECTORY), 0);
        if (fd < 0)
        {
            var errno = Libc.LastError;
            if (errno == Libc.ENOENT)
                return; // Nothing there to allow.
            throw new SysCallException($"open({path}, O_PATH) for a Landlock rule", errno);
        }

        try
        {
            if (owner is { } uid)
            {
                Libc.Stat st;
                if (Libc.FStat(fd, &st) != 0)
                    SysCallException.ThrowLast($"fstat({path})");
                if ((st.Mode & Libc.S_IFMT) != Libc.S_IFDIR || st.Uid != uid || (st.Mode & 0x2) != 0)
                    throw new InvalidOperationException($"write path {path} must be a directory owned by uid {uid} and not writable by others (it is owned by uid {st.Uid}, mode {Convert.ToString(st.Mode & 0xFFF, 8)})");
            }

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
