using System.Globalization;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// The channel between the dispatcher and a worker is in no epoll set that waits for it to be writable, in either
/// process. The runtime's epoll set registers a socket for reading and writing, edge-triggered, for as long as it is
/// open: every connection handed over then woke the dispatcher's runtime once the worker had read it, and the worker's
/// once it arrived, for nothing: a third of the dispatcher's system calls on short plain-HTTP connections
/// (docs/operations.md, "A new connection's system calls"). The dispatcher waits for a worker's reports in its own set,
/// for reading only; the worker reads its channel in poll(2), idle or not.
/// </summary>
public sealed class ChannelReadinessTests : IDisposable
{
    private const uint EpollOut = 0x4;
    private readonly ITestOutputHelper _output;
    private DispatchInstance? _dispatch;

    public ChannelReadinessTests(ITestOutputHelper output) => _output = output;

    [SkippableFact]
    public async Task Neither_end_of_a_workers_channel_waits_for_it_to_be_writable()
    {
        TestWorld.RequireRoot();
        Assert.True(File.Exists("/usr/bin/ss") || File.Exists("/bin/ss"), "ss (iproute2) is needed: run-tests.sh installs it");
        var dir = TestWorld.NewTestDirectory("channel-readiness");
        var a = TestWorld.NewTenantTree(dir, "a", TestWorld.TenantA, new Dictionary<string, string> { ["index.html"] = "A" });
        var b = TestWorld.NewTenantTree(dir, "b", TestWorld.TenantB, new Dictionary<string, string> { ["index.html"] = "B" });
        var d = _dispatch = DispatchInstance.StartReady(dir, DispatchInstance.SampleConfig(TestWorld.FreePort(), a, b), _output);
        var url = $"http://127.0.0.1:{d.HttpPort}/";

        // Connections handed over, then the worker idle for longer than its channel thread's idle wait (1 s; it used to
        // wait through the runtime's epoll set from then on), then more.
        for (var i = 0; i < 5; i++)
            Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", url).Status);
        var worker = d.WorkerPid("a");
        await Task.Delay(1500);
        for (var i = 0; i < 5; i++)
            Assert.Equal(200, Tools.Curl("-H", "Host: a.localhost", url).Status);

        var channels = ChannelsBetween(d.DispatcherPid, worker);
        Assert.True(channels.Count > 0, $"no socket of the dispatcher ({d.DispatcherPid}) is connected to one of the worker ({worker})");
        foreach (var (pid, fd) in channels)
        {
            var watched = EpollMasks(pid, fd);
            _output.WriteLine($"process {pid} descriptor {fd}: epoll masks [{string.Join(", ", watched.Select(m => m.ToString("x", CultureInfo.InvariantCulture)))}]");
            Assert.DoesNotContain(watched, mask => (mask & EpollOut) != 0);
        }
    }

    /// <summary>Both ends of each unix socket connecting the two processes, as (pid, descriptor), from <c>ss -xpn</c>.</summary>
    private static List<(int Pid, int Fd)> ChannelsBetween(int dispatcher, int worker)
    {
        var ss = Tools.Run("ss", "-xpn");
        Assert.True(ss.ExitCode == 0, $"ss -xpn failed: {ss.Stderr}");

        // A line: type, state, queues, local address, its inode, peer address, its inode, users:(("name",pid=P,fd=F),...)
        var ends = new Dictionary<string, List<(int Pid, int Fd)>>(StringComparer.Ordinal);
        var peers = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in ss.Stdout.Split('\n'))
        {
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 9 || !fields[0].StartsWith("u_", StringComparison.Ordinal))
                continue;
            var inode = fields[5];
            peers[inode] = fields[7];
            var users = string.Join(' ', fields[8..]);
            foreach (var user in users.Split("),(", StringSplitOptions.None))
            {
                var pid = Field(user, "pid=");
                var fd = Field(user, "fd=");
                if (pid is not null && fd is not null)
                    (ends.TryGetValue(inode, out var list) ? list : ends[inode] = []).Add((pid.Value, fd.Value));
            }
        }

        var found = new List<(int Pid, int Fd)>();
        foreach (var (inode, owners) in ends)
        {
            if (!owners.Any(o => o.Pid == dispatcher) || !peers.TryGetValue(inode, out var peer) || !ends.TryGetValue(peer, out var peerOwners))
                continue;
            if (!peerOwners.Any(o => o.Pid == worker))
                continue;
            found.AddRange(owners.Where(o => o.Pid == dispatcher));
            found.AddRange(peerOwners.Where(o => o.Pid == worker));
        }

        return found;
    }

    private static int? Field(string user, string key)
    {
        var at = user.IndexOf(key, StringComparison.Ordinal);
        if (at < 0)
            return null;
        var end = at + key.Length;
        while (end < user.Length && char.IsAsciiDigit(user[end]))
            end++;
        return int.Parse(user.AsSpan(at + key.Length, end - at - key.Length), CultureInfo.InvariantCulture);
    }

    /// <summary>The event masks with which the epoll sets of <paramref name="pid"/> watch its descriptor <paramref name="fd"/>.</summary>
    private static List<uint> EpollMasks(int pid, int fd)
    {
        var masks = new List<uint>();
        foreach (var path in Directory.GetFiles($"/proc/{pid}/fd"))
        {
            if (new FileInfo(path).LinkTarget != "anon_inode:[eventpoll]")
                continue;
            foreach (var line in File.ReadAllLines($"/proc/{pid}/fdinfo/{Path.GetFileName(path)}"))
            {
                // tfd:       11 events: 80000005 data: ...
                var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length >= 4 && fields[0] == "tfd:" && fields[1] == fd.ToString(CultureInfo.InvariantCulture) && fields[2] == "events:")
                    masks.Add(uint.Parse(fields[3], NumberStyles.HexNumber, CultureInfo.InvariantCulture));
            }
        }

        return masks;
    }

    public void Dispose() => _dispatch?.Dispose();
}
