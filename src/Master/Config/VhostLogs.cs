namespace Dispatch.Master.Config;

/// <summary>A vhost's access and error log files (opened by the master and handed to the pool's workers).</summary>
internal sealed record VhostLogs(string? AccessLog, string? ErrorLog);
