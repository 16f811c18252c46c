using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;

namespace Dispatch.Worker.Tests;

public sealed class VhostTableTests
{
    private static readonly Serilog.ILogger NoLog = Serilog.Core.Logger.None;

    private static VhostTable Table(params Dispatch.Wire.Payloads.WorkerVhost[] settings) =>
        new(settings.Select(s => new Vhost(s, new ConfinedFileProvider("/nonexistent"), NoLog)));

    private static string? Find(VhostTable table, string authority) =>
        VhostTable.TryGetHostName(authority, out var host) && table.TryFind(host, out var vhost) ? vhost.Name : null;

    [Theory]
    [InlineData("a.localhost", "a.localhost")]
    [InlineData("A.LocalHost", "a.localhost")]
    [InlineData("a.localhost:8080", "a.localhost")]
    [InlineData("a.localhost.", "a.localhost")]
    [InlineData("A.LOCALHOST.:443", "a.localhost")]
    [InlineData("www.a.localhost", "a.localhost")]
    [InlineData("x.c.localhost", "wild")]
    [InlineData("X.C.LOCALHOST.:80", "wild")]
    [InlineData("c.localhost", null)]
    [InlineData("a.b.c.localhost", null)]
    [InlineData(".c.localhost", null)]
    [InlineData("b.localhost", null)]
    [InlineData("a.localhost..", null)]
    [InlineData("[::1]:80", null)]
    [InlineData("127.0.0.1", null)]
    [InlineData("exact.c.localhost", "exact")]
    public void Matches_names_aliases_and_one_label_wildcards(string authority, string? expected)
    {
        var table = Table(
            Harness.Vhost("a.localhost", "/r", aliases: ["www.a.localhost"]),
            Harness.Vhost("wild", "/r", aliases: ["*.c.localhost"]),
            Harness.Vhost("exact", "/r", aliases: ["EXACT.c.localhost."]));
        Assert.Equal(expected, Find(table, authority));
    }

    [Theory]
    [InlineData("")]
    [InlineData(":80")]
    [InlineData("   ")]
    [InlineData(".")]
    public void Empty_hosts_are_rejected(string authority) =>
        Assert.False(VhostTable.TryGetHostName(authority, out _));

    [Fact]
    public void Duplicate_names_are_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => Table(
            Harness.Vhost("a.localhost", "/r"),
            Harness.Vhost("b.localhost", "/r", aliases: ["A.localhost."])));
        Assert.Contains("a.localhost", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData("*")]
    [InlineData("a.*.localhost")]
    [InlineData("**.localhost")]
    [InlineData("a..localhost")]
    [InlineData("a/b")]
    [InlineData("a:80")]
    public void Invalid_names_are_refused(string name) =>
        Assert.Throws<ArgumentException>(() => VhostTable.NormalizeConfiguredName(name));
}
