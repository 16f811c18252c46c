using Dispatch.Platform.Hosting;
using Dispatch.TlsDispatcher.Tests;
using Serilog;
using Serilog.Core;
using Serilog.Events;

namespace Dispatch.Tests.Platform.Hosting;

public class ConnectionLogBudgetTests
{
    private const string What = "refused, malformed, handshakes failed or timed out";

    [Fact]
    public void A_burst_is_written_then_the_rate_and_what_is_not_written_is_counted_in_one_line()
    {
        var sink = new CollectingSink();
        var now = 1_000L;
        using var budget = new ConnectionLogBudget(Logger(sink), What, burst: 5, perSecond: 2, reportEvery: TimeSpan.FromHours(1), clockMs: () => now);

        Assert.Equal(5, Enumerable.Range(0, 5).Count(_ => budget.Allow()));
        Assert.False(budget.Allow());
        Assert.False(budget.Allow());

        // Half a second: one more line (2 a second), the rest counted.
        now += 500;
        Assert.True(budget.Allow());
        Assert.False(budget.Allow());
        Assert.Equal(3, budget.NotLogged);

        budget.Report();
        var line = Assert.Single(sink.Lines());
        Assert.StartsWith("3 lines about single connections (refused, malformed, handshakes failed or timed out) not logged in the last 1 s: more than 5 at once or 2 a second", line, StringComparison.Ordinal);
        Assert.Equal(LogEventLevel.Warning, Assert.Single(sink.Events).Level);

        // Nothing counted since: no line. A long quiet spell fills the burst again, not beyond it.
        budget.Report();
        Assert.Single(sink.Lines());
        now += 3_600_000;
        Assert.Equal(5, Enumerable.Range(0, 7).Count(_ => budget.Allow()));
        Assert.Equal(5, budget.NotLogged);
    }

    [Fact]
    public void What_is_counted_is_reported_by_the_timer_even_when_no_connection_follows()
    {
        var sink = new CollectingSink();
        using var budget = new ConnectionLogBudget(Logger(sink), What, burst: 1, perSecond: 0, reportEvery: TimeSpan.FromMilliseconds(100));
        Assert.True(budget.Allow());
        for (var i = 0; i < 4; i++)
            Assert.False(budget.Allow());

        Assert.True(SpinWait.SpinUntil(() => sink.Count >= 1, TimeSpan.FromSeconds(20)), "no report line");
        Assert.StartsWith("4 lines about single connections", Assert.Single(sink.Lines()), StringComparison.Ordinal);

        // Counted after the report: in the next one.
        Assert.False(budget.Allow());
        Assert.True(SpinWait.SpinUntil(() => sink.Count >= 2, TimeSpan.FromSeconds(20)), "no second report line");
        Assert.StartsWith("1 lines about single connections", sink.Lines()[1], StringComparison.Ordinal);
    }

    [Fact]
    public void What_is_counted_when_the_dispatcher_stops_is_reported_then()
    {
        var sink = new CollectingSink();
        var budget = new ConnectionLogBudget(Logger(sink), What, burst: 0, perSecond: 0, reportEvery: TimeSpan.FromHours(1));
        Assert.False(budget.Allow());
        Assert.False(budget.Allow());
        budget.Dispose();
        Assert.StartsWith("2 lines about single connections", Assert.Single(sink.Lines()), StringComparison.Ordinal);
        Assert.False(budget.Allow()); // after Dispose: counted, no timer
    }

    private static Logger Logger(CollectingSink sink) => new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.Sink(sink).CreateLogger();

}
