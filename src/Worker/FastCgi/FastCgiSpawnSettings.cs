namespace Dispatch.Worker.FastCgi;

/// <summary>A php-fpm the worker starts as the tenant (see <see cref="PhpFpmSupervisor"/>).</summary>
/// <param name="Program">Absolute path of the php-fpm binary.</param>
/// <param name="MaxChildren"><c>pm.max_children</c> of its one <c>ondemand</c> pool.</param>
/// <param name="IdleTimeout"><c>pm.process_idle_timeout</c>; null: 10 s.</param>
/// <param name="Directory">Where the socket and the generated config go: a directory only the tenant can reach (the
/// master creates one per pool). Null: a fresh private directory under the temporary directory (tests).</param>
/// <param name="PhpAdminValues"><c>php_admin_value[name] = value</c> lines (checked by the master: no line breaks,
/// quotes, backslashes, ';' or brackets).</param>
public sealed record FastCgiSpawnSettings(
    string Program,
    int MaxChildren = 5,
    TimeSpan? IdleTimeout = null,
    string? Directory = null,
    IReadOnlyDictionary<string, string>? PhpAdminValues = null);
