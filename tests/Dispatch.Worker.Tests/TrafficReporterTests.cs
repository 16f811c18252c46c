using System.Collections.Concurrent;
using Dispatch.Wire;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;

namespace Dispatch.Worker.Tests;

/// <summary>
/// The worker's reports of its vhosts' traffic to the dispatcher (<see cref="TrafficReporter"/>): only the vhosts whose
/// counts moved, cumulative, at most <see cref="WorkerTraffic.MaxEntries"/> per message; and the
/// last counts when the worker ends (dispose), so that a worker's last requests are not lost.
/// </summary>
public sealed class TrafficReporterTests
{
    private static List<Vhost> Vhosts(int n) =>
        [.. Enumerable.Range(0, n).Select(i => new Vhost(Harness.Vhost($"v{i}.example", "/nonexistent"), new ConfinedFileProvider("/nonexistent"), Serilog.Core.Logger.None))];

    [Fact]
    public void Only_the_vhosts_whose_counts_moved_are_sent_with_their_totals_and_nothing_when_none_did()
    {
        var vhosts = Vhosts(3);
        var sent = new ConcurrentQueue<WorkerTraffic>();
        using var reporter = new TrafficReporter(vhosts, sent.Enqueue);
        vhosts[1].Traffic.Record(200, 10, TimeSpan.FromMilliseconds(1));
        vhosts[1].Traffic.Record(500, 5, TimeSpan.FromMilliseconds(1));

        // Within the period (a second) after the first request, without being asked.
        Assert.True(SpinWait.SpinUntil(() => !sent.IsEmpty, TimeSpan.FromSeconds(30)), "no report came");
        var first = Assert.Single(sent);
        var v1 = Assert.Single(first.Vhosts);
        Assert.Equal("v1.example", v1.Vhost);
        Assert.Equal([0, 1, 0, 0, 1], v1.Requests);
        Assert.Equal(15, v1.BytesSent);

        // Nothing moved: a flush sends nothing. Then v1 and v2 move: both go, v1 with its total so far.
        reporter.Flush();
        Assert.Single(sent);
        vhosts[1].Traffic.Record(200, 1, TimeSpan.Zero);
        vhosts[2].Traffic.Record(404, 0, TimeSpan.Zero);
        reporter.Flush();
        Assert.Equal(2, sent.Count);
        var second = sent.Last();
        Assert.Equal(["v1.example", "v2.example"], second.Vhosts.Select(v => v.Vhost));
        Assert.Equal([0, 2, 0, 0, 1], second.Vhosts[0].Requests);
        Assert.Equal(16, second.Vhosts[0].BytesSent);
    }

    [Fact]
    public void Many_vhosts_go_in_messages_of_at_most_the_limit_and_the_last_counts_go_when_the_worker_ends()
    {
        var vhosts = Vhosts(WorkerTraffic.MaxEntries * 2 + 5);
        var sent = new ConcurrentQueue<WorkerTraffic>();
        var reporter = new TrafficReporter(vhosts, sent.Enqueue);
        foreach (var v in vhosts)
            v.Traffic.Record(200, 1, TimeSpan.Zero);

        // The worker ends before its timer fired: the dispose sends what it has.
        reporter.Dispose();
        Assert.Equal([WorkerTraffic.MaxEntries, WorkerTraffic.MaxEntries, 5], sent.Select(m => m.Vhosts.Length));
        Assert.Equal(vhosts.Select(v => v.Name), sent.SelectMany(m => m.Vhosts).Select(v => v.Vhost));
        Assert.All(sent.SelectMany(m => m.Vhosts), v => Assert.Equal(1, v.Total));

        // A channel that is gone loses the report and nothing else.
        vhosts[0].Traffic.Record(200, 1, TimeSpan.Zero);
        var broken = new TrafficReporter(vhosts, _ => throw new ObjectDisposedException("channel"));
        broken.Dispose();
    }
}
