namespace Dispatch.Platform.Interop;

/// <summary>The directories on the way to a path, root first: "/", "/a", "/a/b", ... (for per-component ownership checks).</summary>
public static class PathComponents
{
    public static IEnumerable<string> Of(string absolutePath)
    {
        yield return "/";
        var current = string.Empty;
        foreach (var part in absolutePath.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            current += "/" + part;
            yield return current;
        }
    }
}
