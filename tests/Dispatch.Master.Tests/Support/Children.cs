using Dispatch.Master.Children;
using Dispatch.Platform.Interop;
using Dispatch.Wire;

namespace Dispatch.Master.Tests.Support;

/// <summary>
/// ChildProcess values for the master's bookkeeping: a real channel (a socketpair) but no process behind it, so
/// nothing here is ever killed or waited for. Pids far above any real one.
/// </summary>
internal sealed class Children : IDisposable
{
    private readonly List<ChildProcess> _made = [];
    private int _nextPid = 900_000_000;

    public ChildProcess Worker(string pool) => Make(ProcessRole.Worker, pool);

    public ChildProcess Dispatcher() => Make(ProcessRole.Dispatcher, "dispatcher");

    /// <summary>A dispatcher whose channel's other end is kept: <paramref name="peer"/> reads what the master sends it (the caller disposes it).</summary>
    public ChildProcess Dispatcher(out IpcChannel peer)
    {
        var channel = IpcChannel.CreatePair("Dispatcher (dispatcher)", out var peerFd);
        peer = IpcChannel.FromDescriptor(peerFd, "master");
        var child = new ChildProcess(ProcessRole.Dispatcher, "dispatcher", ++_nextPid, 1000, channel);
        _made.Add(child);
        return child;
    }

    public void Dispose()
    {
        foreach (var c in _made)
            c.Dispose();
    }

    private ChildProcess Make(ProcessRole role, string name)
    {
        var channel = IpcChannel.CreatePair($"{role} ({name})", out var peerFd);
        Libc.Close(peerFd);
        var child = new ChildProcess(role, name, ++_nextPid, 1000, channel);
        _made.Add(child);
        return child;
    }
}
