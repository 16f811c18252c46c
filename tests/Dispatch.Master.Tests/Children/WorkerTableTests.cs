using Dispatch.Master.Children;
using Dispatch.Master.Config;
using Dispatch.Master.Tests.Support;

namespace Dispatch.Master.Tests.Children;

/// <summary>Who runs where, and the worker limits: the pool's maxWorkers and the machine's, counting starts under way.</summary>
public sealed class WorkerTableTests : IDisposable
{
    private readonly Support.Children _children = new();
    private readonly WorkerTable _table = new();
    private readonly SpawnBackoff _backoff = new();

    public void Dispose() => _children.Dispose();

    [Fact]
    public void A_pool_gets_at_most_its_maxWorkers_counting_the_starts_under_way()
    {
        var pool = Pool("a", maxWorkers: 2);
        var dispatcher = _children.Dispatcher();

        Assert.Null(_table.Reserve(pool, 100, _backoff).Refusal);
        Assert.Null(_table.Reserve(pool, 100, _backoff).Refusal);
        Assert.Equal("pool 'a' already has its maximum of 2 workers", _table.Reserve(pool, 100, _backoff).Refusal);

        // One start fails, one worker registers: one more may start, no more.
        _table.CancelStart("a");
        _table.Register(_children.Worker("a"), dispatcher);
        var (refusal, retryAfter) = _table.Reserve(pool, 100, _backoff);
        Assert.Null(refusal);
        Assert.Equal(TimeSpan.Zero, retryAfter);
        Assert.NotNull(_table.Reserve(pool, 100, _backoff).Refusal);
    }

    [Fact]
    public void The_machine_limit_counts_every_pool()
    {
        var a = Pool("a", maxWorkers: 10);
        var b = Pool("b", maxWorkers: 10);
        Assert.Null(_table.Reserve(a, 3, _backoff).Refusal);
        _table.Register(_children.Worker("a"), _children.Dispatcher());
        Assert.Null(_table.Reserve(a, 3, _backoff).Refusal);
        Assert.Null(_table.Reserve(b, 3, _backoff).Refusal);

        Assert.Equal("the machine already runs its maximum of 3 workers (limits:maxWorkers)", _table.Reserve(b, 3, _backoff).Refusal);
    }

    [Fact]
    public void A_pool_that_backs_off_is_refused_with_the_time_left()
    {
        var pool = Pool("a", maxWorkers: 10);
        _backoff.Failed("a", "exec failed");

        var (refusal, retryAfter) = _table.Reserve(pool, 100, _backoff);

        Assert.StartsWith("pool 'a' is backing off after failed worker starts; next attempt in ", refusal, StringComparison.Ordinal);
        Assert.InRange(retryAfter, TimeSpan.FromTicks(1), SpawnBackoff.First);
        // Nothing was reserved: another pool still may start.
        Assert.Null(_table.Reserve(Pool("b", maxWorkers: 1), 1, _backoff).Refusal);
    }

    [Fact]
    public void Spares_are_counted_per_dispatcher_and_starts_count_for_every_dispatcher()
    {
        var pool = Pool("a", maxWorkers: 10) with { MinSpare = 2 };
        var first = _children.Dispatcher();
        var second = _children.Dispatcher();
        _table.Reserve(pool, 100, _backoff);
        _table.Register(_children.Worker("a"), first);

        Assert.Equal(1, _table.MissingSpares(pool, first));
        Assert.Equal(2, _table.MissingSpares(pool, second));
        _table.Reserve(pool, 100, _backoff);
        Assert.Equal(0, _table.MissingSpares(pool, first));
        Assert.Equal(1, _table.MissingSpares(pool, second));
    }

    [Fact]
    public void A_worker_is_found_only_through_the_dispatcher_it_was_given_to_and_removed_once()
    {
        var pool = Pool("a", maxWorkers: 10);
        var owner = _children.Dispatcher();
        var other = _children.Dispatcher();
        var worker = _children.Worker("a");
        _table.Reserve(pool, 100, _backoff);
        _table.Register(worker, owner);

        Assert.Same(worker, _table.Find(worker.Pid, owner));
        Assert.Null(_table.Find(worker.Pid, other));
        Assert.Equal([worker], _table.OwnedBy(owner));
        Assert.Empty(_table.OwnedBy(other));
        var (workers, owners) = _table.Snapshot();
        Assert.Equal([worker], workers);
        Assert.Same(owner, owners[worker.Pid]);

        Assert.True(_table.Remove(worker.Pid, out var was));
        Assert.Same(owner, was);
        Assert.False(_table.Remove(worker.Pid, out was));
        Assert.Null(was);
        Assert.Empty(_table.All());
    }

    private static PoolConfig Pool(string name, int maxWorkers) => Samples.Make<PoolConfig>(1) with { Name = name, MaxWorkers = maxWorkers };
}
