using Dispatch.Worker.FastCgi;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;

namespace Dispatch.Worker.Tests.FastCgi;

/// <summary>Front-controller routing over a real directory tree (through the confined file provider).</summary>
public sealed class FastCgiRouterTests : IDisposable
{
    private static readonly string[] FrontController = ["$uri", "$uri/", "/index.php"];
    private static readonly string[] Index = ["index.php", "index.html"];
    private readonly TempDir _dir = new();
    private readonly ConfinedFileProvider _files;

    public FastCgiRouterTests()
    {
        _dir.Write("site/index.php", "<?php");
        _dir.Write("site/style.css", "x");
        _dir.Write("site/blog/index.php", "<?php");
        _dir.Write("site/docs/index.html", "docs");
        _dir.Write("site/empty/.keep", string.Empty);
        _dir.Write("site/app/run.php", "<?php");
        _dir.Write("site/spa.html", "spa");
        _dir.Write("outside.php", "<?php");
        _dir.Symlink("site/escape.php", _dir.Combine("outside.php"));
        _files = new ConfinedFileProvider(_dir.Combine("site"));
    }

    public void Dispose()
    {
        _files.Dispose();
        _dir.Dispose();
    }

    [Theory]
    [InlineData("/2024/hello-world", FastCgiRouteKind.Script, "/index.php", "")]
    [InlineData("/style.css", FastCgiRouteKind.Static, "", "")]
    [InlineData("/", FastCgiRouteKind.Script, "/index.php", "")]
    [InlineData("/blog/", FastCgiRouteKind.Script, "/blog/index.php", "")]
    [InlineData("/blog", FastCgiRouteKind.AddSlash, "", "")]
    [InlineData("/docs/", FastCgiRouteKind.Static, "", "")]
    [InlineData("/empty/", FastCgiRouteKind.Script, "/index.php", "")] // no index: falls through to the fallback
    [InlineData("/app/run.php", FastCgiRouteKind.Script, "/app/run.php", "")]
    [InlineData("/app/run.php/a/b", FastCgiRouteKind.Script, "/app/run.php", "/a/b")]
    [InlineData("/app/missing.php", FastCgiRouteKind.NotFound, "", "")]
    [InlineData("/escape.php", FastCgiRouteKind.NotFound, "", "")] // a symlink out of the root runs nothing
    [InlineData("/x.phpx", FastCgiRouteKind.Script, "/index.php", "")]
    [InlineData("/.php", FastCgiRouteKind.Script, "/index.php", "")] // a hidden name, not a script
    public void A_front_controller(string path, object kind, string script, string pathInfo)
    {
        var route = FastCgiRouter.Route(path, _files, fastCgi: true, FrontController, Index, listing: false);
        Assert.Equal((FastCgiRouteKind)kind, route.Kind);
        Assert.Equal(script, route.ScriptName);
        Assert.Equal(pathInfo, route.PathInfo);
    }

    [Theory]
    [InlineData("/", FastCgiRouteKind.Script, "/index.php")]
    [InlineData("/blog/", FastCgiRouteKind.Script, "/blog/index.php")]
    [InlineData("/nowhere", FastCgiRouteKind.Static, "")]
    [InlineData("/docs/", FastCgiRouteKind.Static, "")]
    public void Without_tryFiles_only_php_scripts_and_php_indexes_are_taken(string path, object kind, string script)
    {
        var route = FastCgiRouter.Route(path, _files, fastCgi: true, [], Index, listing: false);
        Assert.Equal((FastCgiRouteKind)kind, route.Kind);
        Assert.Equal(script, route.ScriptName);
    }

    [Fact]
    public void A_static_fallback_rewrites_and_404_ends()
    {
        var spa = FastCgiRouter.Route("/any/route", _files, fastCgi: false, ["$uri", "/spa.html"], ["index.html"], listing: false);
        Assert.Equal(FastCgiRouteKind.Static, spa.Kind);
        Assert.Equal("/spa.html", spa.StaticPath);
        Assert.Equal(FastCgiRouteKind.NotFound, FastCgiRouter.Route("/any", _files, fastCgi: false, ["$uri", "=404"], ["index.html"], listing: false).Kind);
        Assert.Equal(FastCgiRouteKind.NotFound, FastCgiRouter.Route("/any", _files, fastCgi: false, ["$uri", "/missing.html"], ["index.html"], listing: false).Kind);
    }

    [Theory]
    [InlineData(new[] { "$uri", "$uri/", "/index.php" }, true, null)]
    [InlineData(new[] { "=404" }, false, null)]
    [InlineData(new[] { "/index.php" }, false, "the fallback '/index.php' needs FastCGI")]
    [InlineData(new[] { "$uri", "$args" }, true, "'$args' is not a fallback (an absolute URL path to a file, or =404)")]
    [InlineData(new[] { "/a", "/b" }, true, "'/a' is not $uri or $uri/")]
    [InlineData(new[] { "$uri", "/../x.php" }, true, "'/../x.php' is not a fallback (an absolute URL path to a file, or =404)")]
    public void The_worker_checks_the_shape_too(string[] tryFiles, bool fastCgi, string? problem)
    {
        Assert.Equal(problem, FastCgiRouter.Check(tryFiles, fastCgi));
    }
}
