using Dispatch.Master.Children;

namespace Dispatch.Master.Tests.Children;

/// <summary>A dispatcher slot restarts its dispatcher at most five times a minute.</summary>
public class RestartBudgetTests
{
    [Fact]
    public void The_sixth_death_within_a_minute_is_refused_and_counted()
    {
        var budget = new RestartBudget();
        for (var i = 1; i <= 5; i++)
        {
            Assert.True(budget.TryTake(10_000 + (i * 1000), out var count));
            Assert.Equal(i, count);
        }

        Assert.False(budget.TryTake(16_000, out var sixth));
        Assert.Equal(6, sixth);
    }

    [Fact]
    public void Deaths_older_than_a_minute_no_longer_count()
    {
        var budget = new RestartBudget();
        for (var i = 0; i < 5; i++)
            Assert.True(budget.TryTake(i * 1000, out _));

        // 60.001 s after the first: it has left the window, the other four have not.
        Assert.True(budget.TryTake(60_001, out var count));
        Assert.Equal(5, count);
        Assert.False(budget.TryTake(60_002, out count));
        Assert.Equal(6, count);
    }
}
