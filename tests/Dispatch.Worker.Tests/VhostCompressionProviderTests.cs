using Dispatch.Wire.Payloads;
using Dispatch.Worker.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Dispatch.Worker.Tests;

/// <summary>
/// <see cref="VhostCompressionProvider.IsCompressible"/> keeps its answers by Content-Type (it runs for every
/// response): a kept answer is the one computed, a type seen again is not recomputed into a different answer, and the
/// store stops growing at <see cref="VhostCompressionProvider.MaxCachedAnswers"/> while answers stay right beyond it.
/// </summary>
public sealed class VhostCompressionProviderTests
{
    private static VhostCompressionProvider Provider(CompressionRoute? route = null) =>
        new(new ServiceCollection().AddLogging().BuildServiceProvider(), route ?? CompressionRoute.Default);

    [Theory]
    [InlineData("text/html", true)]
    [InlineData("text/html; charset=utf-8", true)]
    [InlineData("TEXT/CSS", true)]
    [InlineData("application/javascript", true)]
    [InlineData("image/svg+xml", true)]
    [InlineData("image/png", false)]
    [InlineData("application/octet-stream", false)]
    [InlineData("application/zip", false)]
    [InlineData("text/event-stream", false)]
    [InlineData("nonsense", false)]
    [InlineData("", false)]
    [InlineData(null, false)]
    public void The_answer_is_the_same_the_first_time_and_from_the_store(string? contentType, bool expected)
    {
        var provider = Provider();
        Assert.Equal(expected, provider.IsCompressible(contentType));
        Assert.Equal(expected, provider.IsCompressible(contentType));

        // A fresh provider that sees many other types first answers the same (the store holds per-type answers only).
        var other = Provider();
        foreach (var filler in new[] { "text/plain", "image/jpeg", "application/json", "video/mp4" })
        {
            other.IsCompressible(filler);
        }

        Assert.Equal(expected, other.IsCompressible(contentType));
    }

    [Fact]
    public void Types_that_the_vhost_configures_are_answered_from_its_settings_not_the_defaults()
    {
        var route = CompressionRoute.Default with { Types = ["application/x-custom", "model/*"] };
        var provider = Provider(route);
        Assert.True(provider.IsCompressible("application/x-custom"));
        Assert.True(provider.IsCompressible("model/gltf+json"));
        Assert.False(provider.IsCompressible("text/html"));
        Assert.False(provider.IsCompressible("text/html"));
    }

    [Fact]
    public void The_store_is_bounded_and_answers_beyond_the_bound_are_still_right()
    {
        var provider = Provider();
        var count = VhostCompressionProvider.MaxCachedAnswers * 3;
        for (var i = 0; i < count; i++)
        {
            // Even: a compressible text type; odd: an image type (never compressed).
            var type = i % 2 == 0 ? $"text/x-t{i}" : $"image/x-i{i}";
            Assert.Equal(i % 2 == 0, provider.IsCompressible(type));
        }

        Assert.Equal(VhostCompressionProvider.MaxCachedAnswers, provider.CachedAnswers);
        for (var i = count - 10; i < count; i++)
        {
            var type = i % 2 == 0 ? $"text/x-t{i}" : $"image/x-i{i}";
            Assert.Equal(i % 2 == 0, provider.IsCompressible(type));
        }

        Assert.Equal(VhostCompressionProvider.MaxCachedAnswers, provider.CachedAnswers);
    }
}
