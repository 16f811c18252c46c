namespace Dispatch.Worker.FastCgi;

/// <summary>See <see cref="FastCgiRoute"/>.</summary>
internal enum FastCgiRouteKind
{
    /// <summary>Not ours: the static pipeline (default files, listing, files, 404) goes on.</summary>
    Static,

    /// <summary>Run a PHP script through FastCGI.</summary>
    Script,

    /// <summary>Answer 404 (a missing script, or the <c>=404</c> fallback).</summary>
    NotFound,

    /// <summary>A directory with a PHP index, asked without its trailing slash: redirect to add it.</summary>
    AddSlash,
}
