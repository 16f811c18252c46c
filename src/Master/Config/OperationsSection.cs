using System.Net;
using Microsoft.Extensions.Configuration;

namespace Dispatch.Master.Config;

/// <summary><c>control</c> (the root-only socket of status, reload and upgrade), <c>metrics</c> (the loopback Prometheus endpoint) and <c>reload</c> (whether an edit reloads by itself).</summary>
internal static class OperationsSection
{
    public static OperationsConfig Read(ConfigContext ctx, IConfiguration root)
    {
        ctx.Unknown(root.GetSection("control"), "control", ["socket"]);
        var controlSocket = root["control:socket"] ?? "/run/dispatch/control.sock";
        if (!System.IO.Path.IsPathFullyQualified(controlSocket) || controlSocket.EndsWith('/') || System.Text.Encoding.UTF8.GetByteCount(controlSocket) > 107)
            ctx.Error("control:socket", $"'{controlSocket}' is not an absolute socket path of at most 107 bytes");
        ctx.Unknown(root.GetSection("metrics"), "metrics", ["listen"]);
        IPEndPoint? metricsListen = null;
        if (root["metrics:listen"] is { } metricsText)
        {
            if (!IPEndPoint.TryParse(metricsText, out metricsListen) || metricsListen.Port == 0)
                ctx.Error("metrics:listen", $"'{metricsText}' is not an address:port such as 127.0.0.1:9187");
            else if (!IPAddress.IsLoopback(metricsListen.Address))
                ctx.Error("metrics:listen", $"{metricsListen} is not a loopback address: the metrics endpoint has no authentication, so it listens on 127.0.0.0/8 or ::1 only");
        }

        ctx.Unknown(root.GetSection("reload"), "reload", ["onChange"]);
        var reloadOnChange = ctx.Bool(root.GetSection("reload:onChange"), true);
        return new OperationsConfig(controlSocket, metricsListen, reloadOnChange);
    }
}
