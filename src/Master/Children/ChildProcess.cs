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
