using System.Collections.Concurrent;
using Dispatch.Platform.Interop;
using Dispatch.Wire.Interop;

namespace Dispatch.Worker.Http;

/// <summary>
/// Asynchronous readiness for descriptors .NET cannot wait on without blocking a thread: the non-blocking pipe ends
/// and pidfds of CGI scripts, and a plain HTTP/1 connection's socket while <see cref="DirectSocketWriter"/> waits to
/// send (.NET has no wait for writability). One epoll set and one background thread per process, created on first use;
/// waiters are woken on the thread pool.
/// </summary>
/// <remarks>
/// .NET's <c>FileStream</c> and <c>AnonymousPipe*Stream</c> read and write pipes synchronously on thread-pool
/// threads; socketpairs would be asynchronous, but a CGI script whose stdin/stdout is a socket cannot open
/// <c>/dev/stdin</c> or <c>/dev/stdout</c> (ENXIO). Registrations are one-shot (re-armed with EPOLL_CTL_MOD per wait),
/// level-triggered, so a descriptor already ready wakes its waiter at once. A wake-up can be spurious (a late event of
/// an earlier, cancelled wait): callers retry the system call and wait again on EAGAIN.
/// </remarks>
internal sealed unsafe class FdReactor
{
    private static readonly Lazy<FdReactor> s_shared = new(() => new FdReactor(), LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly int _epoll;
    private readonly ConcurrentDictionary<ulong, FdWatch> _watches = new();
    private long _nextId;

    private FdReactor()
    {
        _epoll = Libc.EpollCreate1(CgiNative.EpollCloExec);
        if (_epoll < 0)
        {
            SysCallException.ThrowLast("epoll_create1");
        }

        var thread = new Thread(Loop) { IsBackground = true, Name = "I/O reactor" };
        thread.Start();
    }

    public static FdReactor Shared => s_shared.Value;

    /// <summary>Descriptors registered now (a leak shows here).</summary>
    public int Registered => _watches.Count;

    /// <summary>Descriptors registered now by watches of <paramref name="owner"/> (<see cref="Watch"/>'s).</summary>
    public int RegisteredBy(string owner) => _watches.Values.Count(w => w.Owner == owner);

    /// <summary>A watch for <paramref name="fd"/>, on behalf of <paramref name="owner"/> (what <see cref="RegisteredBy"/> counts); dispose it before closing the descriptor.</summary>
    public FdWatch Watch(int fd, string owner)
    {
        var watch = new FdWatch(this, fd, (ulong)Interlocked.Increment(ref _nextId), owner);
        _watches[watch.Id] = watch;
        return watch;
    }

    internal void Arm(FdWatch watch, uint events, bool added)
    {
        var ev = new Libc.EpollEvent { Events = events | Libc.EPOLLONESHOT, Data = watch.Id };
        if (Libc.EpollCtl(_epoll, added ? Libc.EPOLL_CTL_MOD : Libc.EPOLL_CTL_ADD, watch.Fd, &ev) != 0)
        {
            SysCallException.ThrowLast(added ? "epoll_ctl(MOD)" : "epoll_ctl(ADD)");
        }
    }

    internal void Remove(FdWatch watch, bool added)
    {
        _watches.TryRemove(watch.Id, out _);
        if (added)
        {
            Libc.EpollCtl(_epoll, Libc.EPOLL_CTL_DEL, watch.Fd, null);
        }
    }

    private void Loop()
    {
        const int Capacity = 64;
        var events = stackalloc Libc.EpollEvent[Capacity];
        while (true)
        {
            var count = Libc.EpollWait(_epoll, events, Capacity, -1);
            if (count < 0)
            {
                if (Libc.LastError == Libc.EINTR)
                {
                    continue;
                }

                // Nothing sensible is left to do; waiters still have their cancellation (timeouts) to end on.
                return;
            }

            for (var i = 0; i < count; i++)
            {
                if (_watches.TryGetValue(events[i].Data, out var watch))
                {
                    watch.Signal();
                }
            }
        }
    }
}

/// <summary>One descriptor registered with the <see cref="FdReactor"/>; one waiter at a time.</summary>
internal sealed class FdWatch : IDisposable
{
    private readonly FdReactor _reactor;
    private readonly Lock _lock = new();
    private TaskCompletionSource<bool>? _pending;
    private bool _added;
    private bool _disposed;

    internal FdWatch(FdReactor reactor, int fd, ulong id, string owner)
    {
        _reactor = reactor;
        Fd = fd;
        Id = id;
        Owner = owner;
    }

    public int Fd { get; }

    /// <summary>Who watches: <see cref="CgiProcess.WatchOwner"/>, <see cref="DirectSocketWriter.WatchOwner"/>.</summary>
    public string Owner { get; }

    internal ulong Id { get; }

    /// <summary>Completes when the descriptor is (probably) ready for <paramref name="events"/>.</summary>
    public async Task WaitAsync(uint events, CancellationToken cancellationToken)
    {
        if (!await WaitQuietlyAsync(events, cancellationToken).ConfigureAwait(false))
        {
            cancellationToken.ThrowIfCancellationRequested();
            throw new ObjectDisposedException(nameof(FdWatch));
        }
    }

    /// <summary>
    /// As <see cref="WaitAsync"/>, without an exception: false when the token fired or the watch was disposed (a
    /// connection's end is no error: thousands of them end at once when a flood does).
    /// </summary>
    public Task<bool> WaitQuietlyAsync(uint events, CancellationToken cancellationToken)
    {
        var completion = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            if (_disposed)
            {
                return Task.FromResult(false);
            }

            _pending = completion;
            _reactor.Arm(this, events, _added);
            _added = true;
        }

        if (!cancellationToken.CanBeCanceled)
        {
            return completion.Task;
        }

        var registration = cancellationToken.UnsafeRegister(static state => ((TaskCompletionSource<bool>)state!).TrySetResult(false), completion);
        return completion.Task.ContinueWith(
            static (task, state) =>
            {
                ((CancellationTokenRegistration)state!).Dispose();
                return task.Result;
            },
            registration,
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }

    internal void Signal() => Interlocked.Exchange(ref _pending, null)?.TrySetResult(true);

    public void Dispose() => Dispose(descriptorOpen: true);

    /// <summary>
    /// Unregisters and wakes the waiter. <paramref name="descriptorOpen"/> false: the descriptor was closed (it left the
    /// epoll set then, and its number may be another's now): the registration is only forgotten, no epoll_ctl.
    /// </summary>
    public void Dispose(bool descriptorOpen)
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _reactor.Remove(this, _added && descriptorOpen);
        }

        Interlocked.Exchange(ref _pending, null)?.TrySetResult(false);
    }
}
