using Dispatch.Platform.Interop;
using Dispatch.Wire;

namespace Dispatch.Master.Children;

/// <summary>A child the master started: its pid, its channel, its stderr, and how it ended.</summary>
internal sealed class ChildProcess : IDisposable
{
    private readonly TaskCompletionSource<int> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ChildProcess(ProcessRole role, string name, int pid, uint uid, IpcChannel channel)
    {
        Role = role;
        Name = name;
        Pid = pid;
        Uid = uid;
        Channel = channel;
    }

    public ProcessRole Role { get; }

    /// <summary>"dispatcher" or the pool's name.</summary>
    public string Name { get; }

    public int Pid { get; }

    public uint Uid { get; }

    public IpcChannel Channel { get; }

    public DateTime Started { get; } = DateTime.UtcNow;

    /// <summary>Completes with the wait status when the reaper collects the child.</summary>
    public Task<int> Exited => _exited.Task;

    public void MarkExited(int status) => _exited.TrySetResult(status);

    public void Kill(int signal = Libc.SIGKILL)
    {
        if (!Exited.IsCompleted)
            Libc.Kill(Pid, signal);
    }

    public static string DescribeStatus(int status)
    {
        var sig = status & 0x7f;
        return sig == 0 ? $"exit code {(status >> 8) & 0xff}" : $"signal {sig}";
    }

    public override string ToString() => $"{Role} {Pid} ({Name})";

    public void Dispose() => Channel.Dispose();
}

/// <summary>Collects every child's exit status (waitpid(-1) on one thread) and hands it to its ChildProcess.</summary>
internal sealed unsafe class Reaper : IDisposable
{
    private readonly Dictionary<int, ChildProcess> _children = [];
    private readonly Dictionary<int, int> _early = [];
    private readonly Lock _gate = new();
    private readonly SemaphoreSlim _spawned = new(0);
    private readonly Action<ChildProcess, int> _onExit;

    public Reaper(Action<ChildProcess, int> onExit)
    {
        _onExit = onExit;
        new Thread(Run) { IsBackground = true, Name = "reaper" }.Start();
    }

    /// <summary>Registers a child just spawned (possibly already exited: its status is then kept until now).</summary>
    public void Track(ChildProcess child)
    {
        int status;
        lock (_gate)
        {
            if (!_early.Remove(child.Pid, out status))
            {
                _children[child.Pid] = child;
                _spawned.Release();
                return;
            }
        }

        child.MarkExited(status);
        _onExit(child, status);
    }

    public void Dispose() => _spawned.Dispose();

    private void Run()
    {
        while (true)
        {
            int status;
            var pid = Libc.WaitPid(-1, &status, 0);
            if (pid < 0)
            {
                if (Libc.LastError == Libc.ECHILD)
                {
                    try
                    {
                        _spawned.Wait(1000);
                    }
                    catch (ObjectDisposedException)
                    {
                        return; // The master is exiting.
                    }
                }

                continue;
            }

            ChildProcess? child;
            lock (_gate)
            {
                if (!_children.Remove(pid, out child))
                    _early[pid] = status;
            }

            if (child is not null)
            {
                child.MarkExited(status);
                _onExit(child, status);
            }
        }
    }
}
