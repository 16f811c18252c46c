using Dispatch.Wire;

namespace Dispatch.Worker;

/// <summary>The vhosts' access and error logs, as descriptors the master sent (LogFiles, ErrorLogFiles), by vhost name.</summary>
internal sealed class LogFileTable(Serilog.ILogger? problems = null)
{
    public Dictionary<string, TenantLogFile> Access { get; } = new(StringComparer.Ordinal);

    public Dictionary<string, TenantLogFile> Errors { get; } = new(StringComparer.Ordinal);

    /// <summary>The vhosts whose access log is in JSON (<c>accessLogFormat</c>), known once the pool's settings are read.</summary>
    public HashSet<string> JsonAccessLogs { get; } = new(StringComparer.Ordinal);

    /// <summary>
    /// Takes the descriptors of a LogFiles (<paramref name="errors"/> false) or ErrorLogFiles message, one
    /// per vhost named (the count is checked by the channel): new files, or reopened ones (SIGUSR1).
    /// </summary>
    public void Apply(bool errors, string[] vhosts, ReceivedDescriptors descriptors)
    {
        var files = errors ? Errors : Access;
        for (var i = 0; i < vhosts.Length; i++)
        {
            var fd = descriptors.Take(i);
            if (files.TryGetValue(vhosts[i], out var existing))
                existing.Reopen(fd);
            else
                files[vhosts[i]] = errors ? TenantLogFile.Error(fd, vhosts[i], problems) : TenantLogFile.Access(fd, vhosts[i], problems, json: JsonAccessLogs.Contains(vhosts[i]));
        }
    }
}
