using Dispatch.Wire.Payloads;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>The <c>dispatcher</c>: its identity (never root), its timeouts, engine, processes and client limits.</summary>
internal static class DispatcherSection
{
    private static readonly string[] Keys = ["user", "group", "headerTimeout", "maxRequestHead", "workerWait", "nofile", "handshakeTimeout", "engine", "processes", "stopGrace", "sendTimeout", "limits"];

    public static DispatcherConfig Read(ConfigContext ctx, IConfiguration root)
    {
        var d = root.GetSection("dispatcher");
        ctx.Unknown(d, "dispatcher", Keys);
        var (dUid, dGid) = ctx.Identity(d, "dispatcher");
        if (dUid == 0 && d["user"] is not null)
            ctx.Error("dispatcher:user", "the dispatcher must not run as root");
        var dispatcher = new DispatcherConfig(
            dUid,
            dGid,
            ctx.Duration(d.GetSection("headerTimeout"), TimeSpan.FromSeconds(10)),
            ctx.Int(d.GetSection("maxRequestHead"), 16384, 1024, 60000),
            ctx.Duration(d.GetSection("workerWait"), TimeSpan.FromSeconds(30)),
            ctx.ULong(d.GetSection("nofile"), 65536),
            ctx.Duration(d.GetSection("handshakeTimeout"), TimeSpan.FromSeconds(10)),
            d["engine"] ?? TlsEngines.BouncyCastle,
            ctx.Int(d.GetSection("processes"), 1, 1, 64),
            ctx.Duration(d.GetSection("stopGrace"), TimeSpan.FromSeconds(30)))
        {
            SendTimeout = ctx.Duration(d.GetSection("sendTimeout"), TimeSpan.FromSeconds(60)),
            ClientLimits = ReadClientLimits(ctx, d.GetSection("limits")),
        };
        if (dispatcher.Engine is not (TlsEngines.BouncyCastle or TlsEngines.OpenSsl))
            ctx.Error("dispatcher:engine", $"'{dispatcher.Engine}' is not a TLS engine (bouncycastle or openssl)");

        return dispatcher;
    }

    /// <summary>dispatcher:limits: { perAddress: { connections, newPerSecond }, global: { connections, newPerSecond } }; 0: no limit.</summary>
    private static ClientLimitSettings ReadClientLimits(ConfigContext ctx, IConfigurationSection section)
    {
        ctx.Unknown(section, section.Path, ["perAddress", "global"]);
        var perAddress = section.GetSection("perAddress");
        var global = section.GetSection("global");
        ctx.Unknown(perAddress, perAddress.Path, ["connections", "newPerSecond"]);
        ctx.Unknown(global, global.Path, ["connections", "newPerSecond"]);
        var d = ClientLimitSettings.Default;
        return new ClientLimitSettings(
            ctx.Int(perAddress.GetSection("connections"), d.PerAddressConnections, 0, 10_000_000),
            ctx.Int(perAddress.GetSection("newPerSecond"), d.PerAddressPerSecond, 0, 10_000_000),
            ctx.Int(global.GetSection("connections"), d.GlobalConnections, 0, 10_000_000),
            ctx.Int(global.GetSection("newPerSecond"), d.GlobalPerSecond, 0, 10_000_000));
    }
}
