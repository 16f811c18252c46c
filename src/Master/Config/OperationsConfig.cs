using System.Net;

namespace Dispatch.Master.Config;

/// <param name="ControlSocket">The root-only Unix socket that <c>Master status</c> (and reload, upgrade) talk to.</param>
/// <param name="MetricsListen">The loopback address the Prometheus endpoint listens on (served by a dispatcher); null: none.</param>
internal sealed record OperationsConfig(string ControlSocket, IPEndPoint? MetricsListen);
