using Dispatch.Platform.Interop;

namespace Dispatch.Master.Children;

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
