using System.Collections.Concurrent;
using System.Net;
using Dispatch.Platform.Net;
using Dispatch.TlsDispatcher.Net;

namespace Dispatch.TlsDispatcher.Tests.Net;

/// <summary>
/// The dispatcher's connection steps take their turns on the thread pool by address: a visitor's before a flood's
/// queued earlier, four to one while both wait, every step once.
/// </summary>
public sealed class ConnectionTurnsTests
{
    private static readonly IPAddress Flood = IPAddress.Parse("192.0.2.1");
    private static readonly IPAddress Visitor = IPAddress.Parse("192.0.2.2");

    private readonly ConcurrentQueue<IThreadPoolWorkItem> _tokens = new();

    private ConnectionTurns Turns() => new(a => a.Equals(Flood) ? 100 : 1, _tokens.Enqueue);

    [Fact]
    public void A_visitors_steps_go_before_a_floods_queued_earlier_four_to_one_while_both_wait()
    {
        var turns = Turns();
        var ran = new List<string>();
        for (var i = 1; i <= 6; i++)
            turns.Queue(s => ran.Add((string)s!), "flood" + i, Flood);
        for (var i = 1; i <= 6; i++)
            turns.Queue(s => ran.Add((string)s!), "visitor" + i, Visitor);
        Assert.Equal(12, _tokens.Count);
        Assert.Equal(12, turns.Waiting);

        while (_tokens.TryDequeue(out var token))
            token.Execute();

        Assert.Equal(
            ["visitor1", "visitor2", "visitor3", "visitor4", "flood1", "visitor5", "visitor6", "flood2", "flood3", "flood4", "flood5", "flood6"],
            ran);
        Assert.Equal(0, turns.Waiting);
        Assert.Equal(6, turns.LightFirst);
    }

    [Fact]
    public void An_address_is_light_below_the_shared_threshold_and_no_address_is_light()
    {
        var open = 0;
        var turns = new ConnectionTurns(_ => open, _tokens.Enqueue);
        Assert.True(turns.IsLight(null));
        open = AddressTurns.LightBelow - 1;
        Assert.True(turns.IsLight(Visitor));
        open = AddressTurns.LightBelow;
        Assert.False(turns.IsLight(Visitor));
    }

    [Fact]
    public async Task An_awaited_turn_resumes_only_when_its_token_runs()
    {
        var turns = Turns();
        var resumed = false;
        var task = Task.Run(async () =>
        {
            await turns.Yield(Visitor);
            resumed = true;
        });
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (_tokens.IsEmpty && DateTime.UtcNow < deadline)
            await Task.Delay(5);
        Assert.True(_tokens.TryDequeue(out var token), "the yield queued no token");
        Assert.False(resumed);

        token.Execute();
        await task.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(resumed);
    }

    [Fact]
    public async Task On_the_real_pool_every_step_runs_once()
    {
        var turns = new ConnectionTurns(a => a.Equals(Flood) ? 100 : 1);
        const int Steps = 2000;
        var counts = new int[Steps];
        using var done = new CountdownEvent(Steps);
        Parallel.For(0, Steps, i => turns.Queue(
            s =>
            {
                Interlocked.Increment(ref counts[(int)s!]);
                done.Signal();
            },
            i,
            i % 3 == 0 ? Visitor : Flood));
        Assert.True(await Task.Run(() => done.Wait(TimeSpan.FromSeconds(30))), "not every step ran");
        Assert.All(counts, c => Assert.Equal(1, c));
        Assert.Equal(0, turns.Waiting);
    }
}
