using Dispatch.Wire.Payloads;

namespace Dispatch.Tests.Wire.Payloads;

public class HostMatcherTests
{
    private static HostMatcher<string> Matcher()
    {
        var m = new HostMatcher<string>();
        Assert.True(m.TryAdd("A.Example.", "exact-a"));
        Assert.True(m.TryAdd("*.example", "wild"));
        Assert.True(m.TryAdd("b.example", "exact-b"));
        Assert.True(m.TryAdd("*.c.example", "wild-c"));
        return m;
    }

    [Theory]
    [InlineData("a.example", "exact-a")]
    [InlineData("b.example", "exact-b")]
    [InlineData("x.example", "wild")]
    [InlineData("x.c.example", "wild-c")]
    [InlineData("c.example", "wild")]
    public void Exact_beats_wildcard_and_a_wildcard_covers_one_label(string host, string expected) =>
        Assert.Equal(expected, Matcher().Match(host));

    [Theory]
    [InlineData("example")]
    [InlineData("y.x.b.example")]
    [InlineData("other.test")]
    public void Names_outside_every_pattern_do_not_match(string host) => Assert.Null(Matcher().Match(host));

    [Fact]
    public void Normalisation_lowercases_and_drops_one_trailing_dot()
    {
        Assert.Equal("a.example", HostNames.Normalize(" A.EXAMPLE. "));
        Assert.False(Matcher().TryAdd("a.EXAMPLE", "again"));
        Assert.True(HostNames.IsValidPattern("*.c.example"));
        Assert.False(HostNames.IsValidPattern("a..example"));
        Assert.False(HostNames.IsValidPattern("-a.example"));
        Assert.False(HostNames.IsValidPattern("a b.example"));
        Assert.False(HostNames.IsValidPattern("*.*.example"));
    }
}
