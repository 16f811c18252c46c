using System.Diagnostics;
using System.Net.Sockets;
using System.Text;

namespace Dispatch.Tests.EndToEnd;

/// <summary>Runs real clients (curl, openssl) and reads /proc.</summary>
public static class Tools
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    public static Result Run(string file, params string[] args) => RunWithInput(null, file, args);

    public static Result RunWithInput(string? input, string file, params string[] args) => RunFor(TimeSpan.FromSeconds(60), input, file, args);

    /// <summary>Like <see cref="Run"/>, waiting up to <paramref name="bound"/> for the tool to finish (a scanner: minutes under load).</summary>
    public static Result RunUpTo(TimeSpan bound, string file, params string[] args) => RunFor(bound, null, file, args);

    private static Result RunFor(TimeSpan bound, string? input, string file, string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        if (input is not null)
            p.StandardInput.Write(input);
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(bound))
        {
            p.Kill(true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish");
        }

        p.WaitForExit();
        return new Result(p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>curl with -sS; returns status code and body.</summary>
    public static (int Status, string Body, string Headers) Curl(params string[] args)
    {
        var headers = Path.GetTempFileName();
        try
        {
            var r = Run("curl", ["-sS", "--max-time", "30", "-D", headers, "-o", "-", "-w", "\n%{http_code}", .. args]);
            Assert.True(r.ExitCode == 0, $"curl {string.Join(' ', args)} failed ({r.ExitCode}): {r.Stderr}");
            var cut = r.Stdout.LastIndexOf('\n');
            return (int.Parse(r.Stdout[(cut + 1)..], System.Globalization.CultureInfo.InvariantCulture), r.Stdout[..cut], File.ReadAllText(headers));
        }
        finally
        {
            File.Delete(headers);
        }
    }

    /// <summary>Key → value of /proc/PID/status (or of one thread's status).</summary>
    public static Dictionary<string, string> Status(string statusPath) =>
        File.ReadAllLines(statusPath)
            .Select(l => l.Split(':', 2))
            .Where(p => p.Length == 2)
            .ToDictionary(p => p[0], p => p[1].Trim());

    /// <summary>fd number → link target, for every descriptor of a process.</summary>
    public static Dictionary<int, string> Descriptors(int pid)
    {
        var result = new Dictionary<int, string>();
        foreach (var entry in Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd"))
        {
            try
            {
                result[int.Parse(Path.GetFileName(entry), System.Globalization.CultureInfo.InvariantCulture)] = new FileInfo(entry).LinkTarget ?? "?";
            }
            catch (IOException)
            {
                // Closed while we listed.
            }
        }

        return result;
    }

    /// <summary>"socket:[inode]" of every TCP socket on the machine (from /proc/net/tcp and tcp6); without the listening ones if <paramref name="listening"/> is false.</summary>
    public static HashSet<string> TcpSocketInodes(bool listening = true)
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        foreach (var file in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
        {
            foreach (var line in File.ReadLines(file).Skip(1))
            {
                var cols = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (cols.Length > 9 && (listening || cols[3] != "0A")) // st 0A: TCP_LISTEN
                    set.Add($"socket:[{cols[9]}]");
            }
        }

        return set;
    }

    public static int DescriptorCount(int pid) => Directory.EnumerateFileSystemEntries($"/proc/{pid}/fd").Count();

    /// <summary>
    /// A process's TCP connections (its TCP sockets but listening ones): its clients' connections in a worker or the
    /// dispatcher. What a test of a process's connections counts: its other descriptors come and go with them (a
    /// worker's open handles of static files: one to four of a file being downloaded, the index page's let go
    /// meanwhile), so a count of every descriptor over a baseline missed 400 stalled readers by one.
    /// </summary>
    public static int TcpConnectionCount(int pid)
    {
        var connections = TcpSocketInodes(listening: false);
        return Descriptors(pid).Values.Count(connections.Contains);
    }

    /// <summary>
    /// What a process's descriptors are, counted by kind ("socket", "anon_inode:[eventpoll]", a file's path), for a
    /// failure message; "(exited)" once the process is gone.
    /// </summary>
    public static string DescriptorKinds(int pid)
    {
        try
        {
            return string.Join(", ", Descriptors(pid).Values
                .Select(target => target.StartsWith("socket:", StringComparison.Ordinal) ? "socket" : target)
                .GroupBy(kind => kind)
                .OrderByDescending(g => g.Count())
                .Select(g => $"{g.Count()} {g.Key}"));
        }
        catch (Exception e) when (e is DirectoryNotFoundException or IOException or UnauthorizedAccessException)
        {
            return "(exited)";
        }
    }

    /// <summary>
    /// A process's descriptors other than epoll sets. Those are made once per process, not per connection, and one of
    /// them late: the worker's <c>FdReactor</c> (its epoll set for CGI pipes and for waiting to sendfile) on its first
    /// use, which a warm-up may or may not reach (a large response that fits in the loopback's buffers never waits).
    /// </summary>
    public static int DescriptorCountBesidesPollers(int pid) =>
        Descriptors(pid).Values.Count(target => target != "anon_inode:[eventpoll]");

    /// <summary>
    /// Waits until <paramref name="pid"/> holds no more than <paramref name="baseline"/> descriptors besides its epoll sets
    /// (<see cref="DescriptorCountBesidesPollers"/>); <see langword="null"/> when it does, else what it held by kind at
    /// the last look and before (<paramref name="kindsBefore"/>), for the failure message. A process that exits
    /// meanwhile (a worker leaving idle) has not come back: its count is unknown.
    /// </summary>
    public static string? AwaitDescriptorsBack(int pid, int baseline, string kindsBefore, TimeSpan deadline)
    {
        var last = kindsBefore;
        var count = -1;
        var back = Eventually(
            () =>
            {
                last = DescriptorKinds(pid);
                try
                {
                    count = DescriptorCountBesidesPollers(pid);
                    return last != "(exited)" && count <= baseline;
                }
                catch (DirectoryNotFoundException)
                {
                    last = "(exited)";
                    return false;
                }
            },
            deadline);
        return back ? null : $"process {pid} did not come back to {baseline} descriptors besides epoll sets in {deadline.TotalSeconds:0} s: {count} at the last look ({last}); before: {kindsBefore}";
    }

    /// <summary>Sends raw bytes on a fresh connection and reads until the server closes (or the deadline).</summary>
    public static async Task<string> RawExchangeAsync(int port, byte[] send, bool halfClose = false, TimeSpan? deadline = null)
    {
        using var client = new TcpClient();
        await client.ConnectAsync(System.Net.IPAddress.Loopback, port);
        var stream = client.GetStream();
        if (send.Length > 0)
            await stream.WriteAsync(send);
        if (halfClose)
            client.Client.Shutdown(SocketShutdown.Send);
        using var cts = new CancellationTokenSource(deadline ?? TimeSpan.FromSeconds(30));
        var buffer = new MemoryStream();
        var chunk = new byte[8192];
        try
        {
            int n;
            while ((n = await stream.ReadAsync(chunk, cts.Token)) > 0)
                buffer.Write(chunk, 0, n);
        }
        catch (IOException)
        {
            // A reset after the response still leaves what was read.
        }

        return Encoding.ASCII.GetString(buffer.ToArray());
    }

    /// <summary>Repeats <paramref name="condition"/> until true or the deadline passes (readiness, not timing).</summary>
    public static bool Eventually(Func<bool> condition, TimeSpan? deadline = null)
    {
        var end = DateTime.UtcNow + (deadline ?? TimeSpan.FromSeconds(30));
        while (DateTime.UtcNow < end)
        {
            if (condition())
                return true;
            Thread.Sleep(50);
        }

        return condition();
    }

    /// <summary>Every process whose parent chain leads to <paramref name="root"/>.</summary>
    public static List<int> Descendants(int root)
    {
        var parents = new Dictionary<int, int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid))
                continue;
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                parents[pid] = int.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture);
            }
            catch (IOException)
            {
            }
        }

        var result = new List<int>();
        var frontier = new Queue<int>([root]);
        while (frontier.Count > 0)
        {
            var p = frontier.Dequeue();
            foreach (var (child, parent) in parents)
            {
                if (parent == p)
                {
                    result.Add(child);
                    frontier.Enqueue(child);
                }
            }
        }

        return result;
    }
}
