namespace Dispatch.Wire.Payloads;

/// <summary>A path redirect of a vhost.</summary>
/// <param name="From">The decoded request path matched (case-sensitive), starting with <c>/</c>.</param>
/// <param name="To">A path (<c>/new</c>) or an absolute http(s) URL the client is sent to; the query is kept.</param>
/// <param name="Status">301, 302, 303, 307 or 308.</param>
/// <param name="Prefix">False: the path must equal <paramref name="From"/>. True: <paramref name="From"/> and everything
/// beneath it (whole segments: <c>/old</c> matches <c>/old/x</c>, not <c>/older</c>), the rest appended to <paramref name="To"/>.</param>
public sealed record RedirectRoute(string From, string To, int Status, bool Prefix);
