using System.Net;

namespace Dispatch.Master.Config;

/// <param name="ControlSocket">The root-only Unix socket that <c>Master status</c> (and reload, upgrade) talk to.</param>
/// <param name="MetricsListen">The loopback address the Prometheus endpoint listens on (served by a dispatcher); null: none.</param>
/// <param name="ReloadOnChange">Whether an edit of the config file (or of the include directory) reloads by itself
/// (<c>reload.onChange</c>); false: only SIGHUP and <c>dispatch reload</c> do. Taken from the config in force when a file
/// changes, so a reload applies it (no restart).</param>
internal sealed record OperationsConfig(string ControlSocket, IPEndPoint? MetricsListen, bool ReloadOnChange = true);
