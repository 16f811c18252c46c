using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// A real Dispatch master (and through it the dispatcher and workers) started as a process on free
/// ports. Readiness is a log line, never a sleep: <see cref="WaitForLine"/> waits for a pattern with a
/// deadline. Disposing stops it with SIGTERM and checks that no process of it is left.
/// </summary>
public sealed partial class DispatchInstance : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);
    private readonly Process _process;
    private readonly List<string> _lines = [];
    private readonly object _gate = new();
    private readonly ITestOutputHelper? _output;
    private readonly ConcurrentDictionary<int, byte> _pids = new();

    private DispatchInstance(Process process, string configPath, int httpPort, ITestOutputHelper? output)
    {
        _process = process;
        ConfigPath = configPath;
        HttpPort = httpPort;
        _output = output;
    }

    public string ConfigPath { get; }

    public int HttpPort { get; }

    /// <summary>The master's pid as it reports it (differs from the started process's when a wrapper such as strace runs it).</summary>
    public int RealMasterPid { get; private set; }

    public int MasterPid => RealMasterPid != 0 ? RealMasterPid : _process.Id;

    public int DispatcherPid { get; private set; }

    /// <summary>A typical two-tenant config; tests adjust the JSON before starting.</summary>
    public static JsonObject SampleConfig(int httpPort, string rootA, string rootB) => new()
    {
        ["listen"] = new JsonArray(new JsonObject { ["endpoint"] = $"127.0.0.1:{httpPort}", ["protocol"] = "http" }),
        ["dispatcher"] = new JsonObject { ["user"] = TestWorld.DispatcherUid.ToString(System.Globalization.CultureInfo.InvariantCulture), ["headerTimeout"] = "2s", ["maxRequestHead"] = 8192 },
        ["pools"] = new JsonObject
        {
            ["a"] = new JsonObject { ["user"] = $"{TestWorld.TenantA}", ["group"] = $"{TestWorld.TenantA}" },
            ["b"] = new JsonObject { ["user"] = $"{TestWorld.TenantB}", ["group"] = $"{TestWorld.TenantB}" },
        },
        ["vhosts"] = new JsonObject
        {
            ["a.localhost"] = new JsonObject { ["aliases"] = new JsonArray("www.a.localhost"), ["pool"] = "a", ["root"] = rootA },
            ["b.localhost"] = new JsonObject { ["pool"] = "b", ["root"] = rootB },
        },
        ["jailProbe"] = new JsonObject { ["threads"] = 32 },
    };

    /// <summary>
    /// <see cref="SampleConfig"/> over empty tenant directories a and b made in <paramref name="dir"/>, for <c>check</c> (which
    /// validates the trees but serves nothing). <paramref name="dir"/> is made 0755: the validator checks that each pool
    /// can traverse to its root, and temp directories are 0700.
    /// </summary>
    public static JsonObject CheckableConfig(string dir, int httpPort = 8080)
    {
        File.SetUnixFileMode(dir, (UnixFileMode)0b111_101_101);
        var a = Directory.CreateDirectory(Path.Combine(dir, "a")).FullName;
        var b = Directory.CreateDirectory(Path.Combine(dir, "b")).FullName;
        return SampleConfig(httpPort, a, b);
    }

    /// <param name="command">The command line before <c>--config FILE</c>; default: the staged Master (an installed one: <c>[".../sbin/dispatch", "run"]</c>).</param>
    public static DispatchInstance Start(string directory, JsonObject config, ITestOutputHelper? output = null, IReadOnlyList<string>? wrapper = null, IReadOnlyDictionary<string, string>? environment = null, IReadOnlyList<string>? command = null)
    {
        var configPath = Path.Combine(directory, "dispatch.json");
        // Each instance its own control socket (the default, /run/dispatch/control.sock, is one per machine).
        config["control"] ??= new JsonObject { ["socket"] = Path.Combine(directory, "control.sock") };
        File.WriteAllText(configPath, config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        var port = int.Parse(config["listen"]![0]!["endpoint"]!.GetValue<string>().Split(':')[^1], System.Globalization.CultureInfo.InvariantCulture);
        IReadOnlyList<string> master = command is { Count: > 0 } ? command : [Path.Combine(TestWorld.AppDirectory, "Master")];
        var psi = new ProcessStartInfo(wrapper is { Count: > 0 } ? wrapper[0] : master[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
            psi.Environment[key] = value;
        if (wrapper is { Count: > 0 })
        {
            foreach (var arg in wrapper.Skip(1))
                psi.ArgumentList.Add(arg);
            psi.ArgumentList.Add(master[0]);
        }

        foreach (var arg in master.Skip(1))
            psi.ArgumentList.Add(arg);

        psi.ArgumentList.Add("--config");
        psi.ArgumentList.Add(configPath);
        var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start the master");
        var instance = new DispatchInstance(process, configPath, port, output);
        process.OutputDataReceived += (_, e) => instance.Add(e.Data);
        process.ErrorDataReceived += (_, e) => instance.Add(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return instance;
    }

    /// <summary>Starts and waits for the readiness line; returns with <see cref="DispatcherPid"/> known.</summary>
    public static DispatchInstance StartReady(string directory, JsonObject config, ITestOutputHelper? output = null, IReadOnlyList<string>? wrapper = null, IReadOnlyDictionary<string, string>? environment = null, IReadOnlyList<string>? command = null)
    {
        var instance = Start(directory, config, output, wrapper, environment, command);
        try
        {
            var m = instance.WaitForLine(ReadyLine());
            instance.DispatcherPid = int.Parse(m.Groups["dispatcher"].Value, System.Globalization.CultureInfo.InvariantCulture);
            instance.RealMasterPid = int.Parse(m.Groups["master"].Value, System.Globalization.CultureInfo.InvariantCulture);
            instance._pids[instance.DispatcherPid] = 0;
            return instance;
        }
        catch
        {
            instance.Dispose();
            throw;
        }
    }

    public string Log
    {
        get
        {
            lock (_gate)
                return string.Join('\n', _lines);
        }
    }

    private void Add(string? line)
    {
        if (line is null)
            return;
        lock (_gate)
        {
            _lines.Add(line);
            Monitor.PulseAll(_gate);
        }

        try
        {
            _output?.WriteLine(line);
        }
        catch (InvalidOperationException)
        {
            // The test has finished; late lines are dropped.
        }
    }

    /// <summary>Waits (with a deadline, not a delay) for the first log line matching <paramref name="pattern"/>.</summary>
    public Match WaitForLine(Regex pattern, int skip = 0)
    {
        var end = DateTime.UtcNow + Deadline;
        DateTime? exitSeen = null;
        lock (_gate)
        {
            while (true)
            {
                var matches = _lines.Select(l => pattern.Match(l)).Where(m => m.Success).ToList();
                if (matches.Count > skip)
                    return matches[skip];
                if (_process.HasExited)
                {
                    exitSeen ??= DateTime.UtcNow;
                    if (DateTime.UtcNow - exitSeen > TimeSpan.FromSeconds(2))
                        throw new InvalidOperationException($"Dispatch exited ({_process.ExitCode}) before logging /{pattern}/. Log:\n{string.Join('\n', _lines)}");
                }

                var left = end - DateTime.UtcNow;
                if (left <= TimeSpan.Zero)
                    throw new TimeoutException($"No log line matched /{pattern}/ within {Deadline.TotalSeconds} s. Log:\n{string.Join('\n', _lines)}");
                Monitor.Wait(_gate, left < TimeSpan.FromMilliseconds(500) ? left : TimeSpan.FromMilliseconds(500));
            }
        }
    }

    /// <summary>The pid of the (first) worker of <paramref name="pool"/>, once it is ready.</summary>
    public int WorkerPid(string pool, int skip = 0)
    {
        var m = WaitForLine(new Regex($@"Worker (?<pid>\d+) for pool {Regex.Escape(pool)} ready"), skip);
        var pid = int.Parse(m.Groups["pid"].Value, System.Globalization.CultureInfo.InvariantCulture);
        _pids[pid] = 0;
        return pid;
    }

    public int WaitForExit()
    {
        if (!_process.WaitForExit(Deadline))
            throw new TimeoutException("the master did not exit");
        _process.WaitForExit();
        return _process.ExitCode;
    }

    private bool _disposed;

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        if (!_process.HasExited)
        {
            _ = kill(MasterPid, 15);
            if (!_process.WaitForExit(TimeSpan.FromSeconds(20)))
            {
                _process.Kill(entireProcessTree: true);
                foreach (var pid in _pids.Keys)
                    _ = kill(pid, 9);
                _process.WaitForExit();
                _process.Dispose();
                throw new InvalidOperationException("the master did not stop on SIGTERM within 20 s");
            }
        }

        _process.WaitForExit();
        _process.Dispose();
        foreach (var pid in _pids.Keys)
            _ = kill(pid, 9);
    }

    [GeneratedRegex(@"Dispatch ready: master (?<master>\d+); dispatcher (?<dispatcher>\d+)")]
    private static partial Regex ReadyLine();

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int kill(int pid, int sig);
}
