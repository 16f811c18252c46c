namespace Dispatch.Wire;

/// <summary>
/// Waits for a descriptor to become readable outside the runtime's epoll set (an epoll set of the process's own, one-shot,
/// for reading only), for an <see cref="IpcChannel"/> that must not wake the runtime's threads for nothing
/// (<see cref="IpcChannel.FromDescriptor"/>).
/// </summary>
public interface IReadinessWaiter
{
    /// <summary>Completes when <paramref name="fd"/> is readable (or closed by the peer, or in error); one wait per descriptor at a time.</summary>
    Task WaitReadableAsync(int fd, CancellationToken cancellationToken);

    /// <summary>Forgets <paramref name="fd"/>: called after each wait, before the descriptor may be closed.</summary>
    void Remove(int fd);
}
