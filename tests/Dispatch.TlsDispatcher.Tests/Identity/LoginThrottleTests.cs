using Dispatch.TlsDispatcher.Identity;

namespace Dispatch.TlsDispatcher.Tests.Identity;

/// <summary><see cref="LoginThrottle"/> with a clock the test sets (no time passes for real).</summary>
public sealed class LoginThrottleTests
{
    [Fact]
    public void Failures_block_the_address_and_the_login_separately_until_the_window_ends()
    {
        var t = new LoginThrottle();
        for (var i = 0; i < 3; i++)
        {
            Assert.Null(t.Blocked("10.0.0.1", "bob", 3, 5, 60_000, 1000));
            t.Failed("10.0.0.1", "bob", 60_000, 1000 + i);
        }

        Assert.Equal(("address", 60), t.Blocked("10.0.0.1", "alice", 3, 5, 60_000, 1500));
        Assert.Null(t.Blocked("10.0.0.2", "bob", 3, 5, 60_000, 1500)); // bob: 3 of 5
        t.Failed("10.0.0.2", "bob", 60_000, 1500);
        t.Failed("10.0.0.3", "bob", 60_000, 1500);
        Assert.Equal("login", t.Blocked("10.0.0.4", "bob", 3, 5, 60_000, 2000)?.Which);
        Assert.Null(t.Blocked("10.0.0.4", "carol", 3, 5, 60_000, 2000));

        // A new window.
        Assert.Null(t.Blocked("10.0.0.1", "bob", 3, 5, 60_000, 61_001));
    }

    [Fact]
    public void Memory_stays_bounded_under_a_flood_of_addresses()
    {
        var t = new LoginThrottle();
        for (var i = 0; i < LoginThrottle.MaxEntries * 2; i++)
        {
            t.Failed($"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", $"u{i}", 600_000, i);
            Assert.True(t.Entries <= LoginThrottle.MaxEntries);
        }

        // Still counting: the newest address is blocked after its third failure.
        t.Failed("192.0.2.1", "y", 600_000, 200_000);
        t.Failed("192.0.2.1", "y", 600_000, 200_000);
        Assert.Null(t.Blocked("192.0.2.1", "z", 3, 10, 600_000, 200_000));
        t.Failed("192.0.2.1", "y", 600_000, 200_000);
        Assert.Equal("address", t.Blocked("192.0.2.1", "z", 3, 10, 600_000, 200_000)?.Which);
    }
}
