namespace Dispatch.Worker.Http;

/// <summary>
/// The worker's own limits on a vhost's CGI scripts (no config key sets them; the tests lower them). What the config says
/// of CGI (its mappings and <c>cgiTimeout</c>) is in the vhost's <see cref="Protocol.Routing.WorkerVhost"/>.
/// </summary>
/// <param name="MaxProcesses">How many CGI scripts this worker process runs at once, counted over all its vhosts, before
/// a request of this vhost is refused with 503.</param>
/// <param name="MaxOutputBytes">Largest response body a script may produce (after its header block); beyond it the
/// script is killed and the connection aborted. <see langword="null"/>: no limit (the body is streamed, never buffered).</param>
public sealed record CgiLimits(int MaxProcesses, long? MaxOutputBytes)
{
    /// <summary>32 scripts at once, no output limit.</summary>
    public static CgiLimits Default { get; } = new(32, null);

    /// <summary>Largest CGI (or FastCGI) response header block: a script sending more, or no blank line within it, gets 502.</summary>
    public const int MaxHeaderBytes = 64 * 1024;
}
