namespace Dispatch.Master.Config;

/// <summary>
/// A vhost's <c>fastcgi</c> section: the tenant's FastCGI application (PHP), reached on an operator-run Unix socket
/// (<paramref name="Socket"/>) or started by the worker itself (<paramref name="Spawn"/>); exactly one of the two.
/// </summary>
internal sealed record FastCgiConfig(string? Socket, FastCgiSpawnConfig? Spawn, TimeSpan ConnectTimeout, TimeSpan ReadTimeout)
{
    /// <summary>What the worker gets (<see cref="Dispatch.Wire.Payloads.FastCgiRoute"/>).</summary>
    /// <param name="spawnDirectory">The pool's php-fpm directory (see <c>FastCgiDirectories</c>).</param>
    public static Dispatch.Wire.Payloads.FastCgiRoute? ToRoute(FastCgiConfig? c, string spawnDirectory) => c is null
        ? null
        : new(
            c.Socket ?? string.Empty,
            c.ConnectTimeout,
            c.ReadTimeout,
            c.Spawn is { } s ? new(s.Program, s.MaxChildren, s.IdleTimeout, spawnDirectory, s.PhpAdminValues.Count == 0 ? null : s.PhpAdminValues) : null);
}
