using Dispatch.TlsDispatcher.Tests.Tls;
using Dispatch.Wire.Payloads;

namespace Dispatch.TlsDispatcher.Tests;

/// <summary>
/// A new route table keeps a terminated vhost's TLS credentials from the table it replaces when the vhost's route is
/// equal where credentials are concerned (engine, h2 offer, certificates: compared as values, never by reference), and
/// builds them afresh when any of those changed.
/// </summary>
public sealed class RouteTableTests
{
    private static RouteSnapshot Snapshot(long version, string chainPem, string engine = TlsEngines.BouncyCastle, bool offerH2 = true) => new(
        version,
        new DispatcherSettings(10_000, 16_384, 10_000, 10_000),
        [
            // Fresh strings and lists every time: equal values, never the same instances.
            new VhostRoute("a.example", [new string("www.a.example".AsSpan())], "a", TlsModes.Terminate,
                [new CertificatePem(new string(chainPem.AsSpan()), new string(TestPki.Shared.EcdsaKeyPkcs8Pem.AsSpan()))], HttpModes.Serve, offerH2, engine),
            new VhostRoute("b.example", [], "b", TlsModes.Passthrough, [], HttpModes.Serve, true, TlsEngines.BouncyCastle),
        ],
        null,
        443,
        [new PoolRoute("a", 0, false, 0, 60_000), new PoolRoute("b", 0, false, 0, 60_000)]);

    [Fact]
    public void An_equal_snapshot_keeps_the_credentials_and_a_changed_one_builds_them_again()
    {
        using var first = new RouteTable(Snapshot(1, TestPki.Shared.EcdsaChainPem), Serilog.Core.Logger.None);
        Assert.Equal(0, first.Reused);
        Assert.Equal(Snapshot(1, TestPki.Shared.EcdsaChainPem), Snapshot(1, TestPki.Shared.EcdsaChainPem));

        using var same = new RouteTable(Snapshot(2, TestPki.Shared.EcdsaChainPem), Serilog.Core.Logger.None, first);
        Assert.Equal(1, same.Reused);

        // The same certificate, its chain without the CA: another value, so built again.
        var leafOnly = TestPki.Shared.EcdsaChainPem[..(TestPki.Shared.EcdsaChainPem.Length - TestPki.Shared.CaPem.Length)];
        using var changed = new RouteTable(Snapshot(3, leafOnly), Serilog.Core.Logger.None, same);
        Assert.Equal(0, changed.Reused);

        using var noH2 = new RouteTable(Snapshot(4, leafOnly, offerH2: false), Serilog.Core.Logger.None, changed);
        Assert.Equal(0, noH2.Reused);
    }
}
