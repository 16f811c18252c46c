using System.Net;
using Dispatch.Wire.Payloads;

namespace Dispatch.Master.Config;

internal sealed record ListenConfig(IPEndPoint Endpoint, string Protocol, ValueList<string> TrustedProxies)
{
    public override string ToString() => $"{Protocol} {Endpoint}";
}
