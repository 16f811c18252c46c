using System.Globalization;
using System.Net;
using Dispatch.Wire;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary>The <c>listen</c> list: address:port, protocol (http or tls) and the trusted PROXY-protocol peers of each.</summary>
internal static class ListenSection
{
    private static readonly string[] Keys = ["endpoint", "protocol", "trustedProxies"];

    public static List<ListenConfig> Read(ConfigContext ctx, IConfiguration root)
    {
        var listen = new List<ListenConfig>();
        var listenSection = root.GetSection("listen");
        if (!listenSection.GetChildren().Any())
            ctx.Error("listen", "at least one listener is required");
        foreach (var l in listenSection.GetChildren())
        {
            ctx.Unknown(l, l.Path, Keys);
            var endpoint = l["endpoint"];
            var protocol = l["protocol"] ?? ListenerProtocols.Http;
            if (protocol is not (ListenerProtocols.Http or ListenerProtocols.Tls))
                ctx.Error($"{l.Path}:protocol", $"'{protocol}' is not a listener protocol (http or tls)");
            if (endpoint is null || !IPEndPoint.TryParse(endpoint, out var ep) || ep.Port == 0)
            {
                ctx.Error($"{l.Path}:endpoint", $"'{endpoint}' is not an address:port such as 127.0.0.1:8080 or [::]:80");
                continue;
            }

            if (listen.Any(x => x.Endpoint.Equals(ep)))
                ctx.Error($"{l.Path}:endpoint", $"{ep} is listed twice");
            var trusted = new List<string>();
            foreach (var t in l.GetSection("trustedProxies").GetChildren())
            {
                var value = t.Value ?? string.Empty;
                var slash = value.IndexOf('/', StringComparison.Ordinal);
                if (!IPAddress.TryParse(slash < 0 ? value : value[..slash], out var address)
                    || (slash >= 0 && (!int.TryParse(value[(slash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var bits) || bits > address.GetAddressBytes().Length * 8)))
                    ctx.Error(t.Path, $"'{value}' is not an address or CIDR block such as 10.0.0.0/8");
                else
                    trusted.Add(value);
            }

            listen.Add(new ListenConfig(ep, protocol, trusted));
        }

        return listen;
    }
}
