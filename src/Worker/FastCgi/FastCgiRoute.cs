namespace Dispatch.Worker.FastCgi;

/// <summary>What the front-controller router decided for a request (see <see cref="FastCgiRouter"/>).</summary>
/// <param name="Kind">Run a script, let the static pipeline serve the (possibly rewritten) path, or answer 404.</param>
/// <param name="ScriptName">The script's URL path (<c>/index.php</c>), for <see cref="FastCgiRouteKind.Script"/>.</param>
/// <param name="PathInfo">The path after the script name (<c>/extra</c> of <c>/a.php/extra</c>), or empty.</param>
/// <param name="StaticPath">For <see cref="FastCgiRouteKind.Static"/>: the path to serve instead (a static fallback), or null.</param>
internal readonly record struct FastCgiRoute(FastCgiRouteKind Kind, string ScriptName = "", string PathInfo = "", string? StaticPath = null)
{
    public static FastCgiRoute Next => new(FastCgiRouteKind.Static);

    public static FastCgiRoute NotFound => new(FastCgiRouteKind.NotFound);
}
