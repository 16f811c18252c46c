using Dispatch.Protocol.Wire;

namespace Dispatch.Worker;

/// <summary>The vhosts' access and error logs, as descriptors the master sent (LogFiles, ErrorLogFiles), by vhost name.</summary>
internal sealed class LogFileTable
{
    public Dictionary<string, TenantLogFile> Access { get; } = new(StringComparer.Ordinal);

    public Dictionary<string, TenantLogFile> Errors { get; } = new(StringComparer.Ordinal);

    /// <summary>Takes the descriptors of a LogFiles or ErrorLogFiles message: new files, or reopened ones (SIGUSR1).</summary>
    public void Apply(IpcMessage message)
    {
        var errors = message.Type == MessageType.ErrorLogFiles;
        var vhosts = errors ? message.Decode<ErrorLogFiles>().Vhosts : message.Decode<LogFiles>().Vhosts;
        if (message.Descriptors.Count != vhosts.Length)
            throw new WireException($"{message.Type} names {vhosts.Length} vhosts but carries {message.Descriptors.Count} descriptors");
        var files = errors ? Errors : Access;
        for (var i = 0; i < vhosts.Length; i++)
        {
            var fd = message.Descriptors.Take(i);
            if (files.TryGetValue(vhosts[i], out var existing))
                existing.Reopen(fd);
            else
                files[vhosts[i]] = errors ? TenantLogFile.Error(fd) : TenantLogFile.Access(fd);
        }
    }
}
