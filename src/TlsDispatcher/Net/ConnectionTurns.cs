using System.Net;
using System.Runtime.CompilerServices;
using Dispatch.Platform.Net;

namespace Dispatch.TlsDispatcher.Net;

/// <summary>
/// The order in which the dispatcher's connections take their steps on the thread pool (a handshake's first flight,
/// the step after each wait for the client): a step of a connection from an address with few connections open here
/// (a visitor) before one from an address with many (a flood), by <see cref="AddressTurns"/>.
/// </summary>
/// <remarks>
/// The runtime's thread pool serves its queue first in, first out: in a flood's ramp, a visitor's handshake waited
/// behind every flood handshake queued before it (docs/floods.md, "Handshakes by address in turn"). Here each step
/// queued puts one token on the pool, and a token runs whichever step comes first by this order: the pool keeps its
/// threads and its concurrency, only the order changes. Light and heavy are judged when the step is queued, from the
/// connections the address has open in the dispatcher (<see cref="ClientLimits.OpenFrom"/>).
/// </remarks>
internal sealed class ConnectionTurns : IThreadPoolWorkItem
{
    private readonly Func<IPAddress, int> _openFrom;
    private readonly Action<IThreadPoolWorkItem> _post;
    private readonly Lock _lock = new();
    private readonly Queue<Step> _light = new();
    private readonly Queue<Step> _heavy = new();
    private int _lightInARow;
    private long _lightFirst;

    /// <param name="openFrom">The connections an address has open here.</param>
    /// <param name="post">Puts a token on the pool (tests run the tokens themselves).</param>
    public ConnectionTurns(Func<IPAddress, int> openFrom, Action<IThreadPoolWorkItem>? post = null)
    {
        _openFrom = openFrom;
        _post = post ?? (static item => ThreadPool.UnsafeQueueUserWorkItem(item, preferLocal: false));
    }

    /// <summary>Light steps that ran before a heavy one queued earlier (what the order changed; for tests).</summary>
    public long LightFirst => Interlocked.Read(ref _lightFirst);

    /// <summary>Steps waiting for their turn.</summary>
    public int Waiting
    {
        get
        {
            lock (_lock)
                return _light.Count + _heavy.Count;
        }
    }

    /// <summary>Whether steps of a connection from <paramref name="address"/> go first (none: a Unix socket's client, light).</summary>
    public bool IsLight(IPAddress? address) => address is null || _openFrom(address) < AddressTurns.LightBelow;

    /// <summary>Queues <paramref name="step"/> for a thread of the pool, in its turn by the address of its connection.</summary>
    public void Queue(Action<object?> step, object? state, IPAddress? address)
    {
        var light = IsLight(address);
        lock (_lock)
            (light ? _light : _heavy).Enqueue(new Step(step, state));
        _post(this);
    }

    /// <summary>Awaited: the rest of the method runs on the pool, in its turn (for <paramref name="address"/>'s connection).</summary>
    public TurnAwaitable Yield(IPAddress? address) => new(this, address);

    void IThreadPoolWorkItem.Execute()
    {
        Step step;
        lock (_lock)
        {
            var heavy = AddressTurns.HeavyNext(_light.Count > 0, _heavy.Count > 0, _lightInARow);
            if (!(heavy ? _heavy : _light).TryDequeue(out step))
                return; // one token per step: not reached
            if (!heavy && _heavy.Count > 0)
                _lightFirst++;
            _lightInARow = heavy ? 0 : _lightInARow + 1;
        }

        step.Run(step.State);
    }

    private readonly record struct Step(Action<object?> Run, object? State);

    /// <summary>What <see cref="Yield"/> gives to await.</summary>
    internal readonly struct TurnAwaitable(ConnectionTurns turns, IPAddress? address)
    {
        public TurnAwaiter GetAwaiter() => new(turns, address);
    }

    /// <summary>Never complete at once: the continuation is queued in its turn. No context flows (the dispatcher has none).</summary>
    internal readonly struct TurnAwaiter(ConnectionTurns turns, IPAddress? address) : ICriticalNotifyCompletion
    {
        public bool IsCompleted => false;

        public void GetResult()
        {
        }

        public void OnCompleted(Action continuation) => UnsafeOnCompleted(continuation);

        public void UnsafeOnCompleted(Action continuation) => turns.Queue(static c => ((Action)c!)(), continuation, address);
    }
}
