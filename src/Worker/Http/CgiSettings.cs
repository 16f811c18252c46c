namespace Dispatch.Worker.Http;

/// <summary>CGI (RFC 3875) for a vhost: which URL prefixes run scripts from which directories, and the limits.</summary>
/// <param name="Mappings">URL prefix → script directory; the longest matching prefix wins.</param>
/// <param name="Timeout">Wall-clock limit for one script run (spawn to exit, output included); <see langword="null"/>
/// means <see cref="DefaultTimeout"/>. On expiry the script's process group is killed (SIGKILL) and the client gets
/// 504, or the connection is aborted when the response had already started.</param>
/// <param name="MaxProcesses">How many CGI scripts this worker process runs at once, counted over all its vhosts, before
/// a request of this vhost is refused with 503; <see langword="null"/> means <see cref="DefaultMaxProcesses"/>.</param>
/// <param name="MaxOutputBytes">Largest response body a script may produce (after its header block); beyond it the
/// script is killed and the connection aborted. <see langword="null"/>: no limit (the body is streamed, never buffered).</param>
public sealed record CgiSettings(
    IReadOnlyList<CgiMapping> Mappings,
    TimeSpan? Timeout = null,
    int? MaxProcesses = null,
    long? MaxOutputBytes = null)
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    public const int DefaultMaxProcesses = 32;

    /// <summary>Largest CGI response header block (a script sending more, or no blank line within it, gets 502).</summary>
    public const int MaxHeaderBytes = 64 * 1024;

    internal TimeSpan EffectiveTimeout => Timeout is { } timeout && timeout > TimeSpan.Zero ? timeout : DefaultTimeout;

    internal int EffectiveMaxProcesses => MaxProcesses is { } max && max > 0 ? max : DefaultMaxProcesses;
}

/// <summary>
/// Requests whose path starts with <paramref name="UrlPrefix"/> run scripts from <paramref name="Directory"/>:
/// <c>/cgi-bin/tool.sh/extra?q</c> runs <c>Directory/tool.sh</c> with PATH_INFO <c>/extra</c>.
/// </summary>
/// <param name="UrlPrefix">An absolute URL path such as <c>/cgi-bin/</c> (a missing trailing slash is added). Matched
/// case-sensitively against the decoded request path.</param>
/// <param name="Directory">Absolute path of the script directory; it need not lie under the vhost's root. Scripts are
/// regular executable files whose real path (symlinks resolved) lies inside the directory's real path. When it lies
/// inside the document root, static serving never returns anything from it (no script source leaks).</param>
public sealed record CgiMapping(string UrlPrefix, string Directory);
