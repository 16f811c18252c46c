using System.Collections.Concurrent;
using System.Net;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Wire.Interop;

namespace Dispatch.TlsDispatcher.Net;

/// <summary>
/// Waits for client sockets to become readable with an epoll set of our own. Sockets the dispatcher
/// hands to a worker must not stay registered in the runtime's epoll: an epoll registration lives as
/// long as the open file description, which the worker now shares, so the runtime would be woken for
/// every byte the worker receives. Here every registration is one-shot and removed (EPOLL_CTL_DEL)
/// before the descriptor leaves. The channels to workers wait here too (<see cref="IpcChannel.FromDescriptor"/>): in the
/// runtime's set, each connection handed to a worker woke the runtime for nothing once the worker had read it.
/// The wait of a client's descriptor that is <see cref="Track"/>ed ends in its connection's turn (<see cref="Turns"/>):
/// the step after it runs inline in that turn, on the pool.
/// </summary>
internal sealed unsafe class ReadinessPoller : IReadinessWaiter, IDisposable
{
    private readonly int _epfd;
    private readonly ConcurrentDictionary<int, Waiter> _waiters = new();
    private readonly ConcurrentDictionary<int, byte> _registered = new();
    private readonly ConcurrentDictionary<int, IPAddress> _clients = new();
    private long _waits;

    public ReadinessPoller()
    {
        _epfd = Libc.EpollCreate1(Libc.O_CLOEXEC);
        if (_epfd < 0)
            SysCallException.ThrowLast("epoll_create1");
        new Thread(Run) { IsBackground = true, Name = "readiness-poller" }.Start();
    }

    /// <summary>The order in which tracked descriptors' waits end (null: each as it comes, on the pool).</summary>
    public ConnectionTurns? Turns { get; init; }

    /// <summary>
    /// Ends the waits of <paramref name="fd"/>, a client's connection, in the turn of its <paramref name="client"/>
    /// address (<see cref="Turns"/>) until it is <see cref="Remove"/>d. Without <see cref="Turns"/>, nothing.
    /// </summary>
    public void Track(int fd, IPAddress? client)
    {
        if (Turns is not null)
            _clients[fd] = client ?? IPAddress.None;
    }

    /// <summary>Waits begun so far, read or write (for tests: a connection whose first bytes are there takes none).</summary>
    public long Waits => Interlocked.Read(ref _waits);

    /// <summary>Descriptors in the set now (for tests: none is left behind once its wait is over).</summary>
    internal int Registered => _registered.Count;

    /// <summary>Completes when <paramref name="fd"/> is readable (or closed by the peer, or in error).</summary>
    public Task WaitReadableAsync(int fd, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _waits);
        var tcs = NewWaiter(fd);
        var ev = new Libc.EpollEvent { Events = Libc.EPOLLIN | Libc.EPOLLRDHUP | Libc.EPOLLONESHOT, Data = (ulong)fd };
        var op = _registered.TryAdd(fd, 0) ? Libc.EPOLL_CTL_ADD : Libc.EPOLL_CTL_MOD;
        if (Libc.EpollCtl(_epfd, op, fd, &ev) != 0)
        {
            _waiters.TryRemove(fd, out _);
            return Task.FromException(new SysCallException("epoll_ctl", Libc.LastError));
        }

        return cancellationToken.CanBeCanceled ? tcs.Task.WaitAsync(cancellationToken) : tcs.Task;
    }

    /// <summary>Completes when <paramref name="fd"/> is writable (or in error). One wait per descriptor at a time, read or write.</summary>
    public Task WaitWritableAsync(int fd, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _waits);
        var tcs = NewWaiter(fd);
        var ev = new Libc.EpollEvent { Events = Libc.EPOLLOUT | Libc.EPOLLONESHOT, Data = (ulong)fd };
        var op = _registered.TryAdd(fd, 0) ? Libc.EPOLL_CTL_ADD : Libc.EPOLL_CTL_MOD;
        if (Libc.EpollCtl(_epfd, op, fd, &ev) != 0)
        {
            _waiters.TryRemove(fd, out _);
            return Task.FromException(new SysCallException("epoll_ctl", Libc.LastError));
        }

        return cancellationToken.CanBeCanceled ? tcs.Task.WaitAsync(cancellationToken) : tcs.Task;
    }

    /// <summary>
    /// A wait's completion: a tracked descriptor's completes in its turn, on the thread that runs the turn, so it runs
    /// its continuation there (not asynchronously, which would queue it on the pool once more); any other's completes on
    /// the poller's thread and queues its continuation.
    /// </summary>
    private TaskCompletionSource NewWaiter(int fd)
    {
        _clients.TryGetValue(fd, out var client);
        var tcs = new TaskCompletionSource(client is null ? TaskCreationOptions.RunContinuationsAsynchronously : TaskCreationOptions.None);
        _waiters[fd] = new Waiter(tcs, client);
        return tcs;
    }

    /// <summary>Forgets <paramref name="fd"/>; call before the descriptor is closed or handed away.</summary>
    public void Remove(int fd)
    {
        _waiters.TryRemove(fd, out _);
        _clients.TryRemove(fd, out _);
        if (_registered.TryRemove(fd, out _))
            Libc.EpollCtl(_epfd, Libc.EPOLL_CTL_DEL, fd, null);
    }

    private void Run()
    {
        const int Max = 256;
        var events = stackalloc Libc.EpollEvent[Max];
        while (true)
        {
            var n = Libc.EpollWait(_epfd, events, Max, -1);
            if (n < 0)
            {
                if (Libc.LastError == Libc.EINTR)
                    continue;
                return;
            }

            for (var i = 0; i < n; i++)
            {
                if (!_waiters.TryRemove((int)events[i].Data, out var waiter))
                    continue;
                if (waiter.Client is not null && Turns is not null)
                    Turns.Queue(static t => ((TaskCompletionSource)t!).TrySetResult(), waiter.Completion, waiter.Client);
                else
                    waiter.Completion.TrySetResult();
            }
        }
    }

    public void Dispose() => Libc.Close(_epfd);

    private readonly record struct Waiter(TaskCompletionSource Completion, IPAddress? Client);
}
