using Dispatch.Wire.Payloads;

namespace Dispatch.Master.Config;

/// <summary><c>fastcgi.spawn</c>: the php-fpm binary the worker starts as the tenant, inside its own jail.</summary>
/// <param name="Program">Absolute path of php-fpm (e.g. /usr/sbin/php-fpm8.2).</param>
/// <param name="MaxChildren"><c>pm.max_children</c> of its one <c>ondemand</c> pool (default 5).</param>
/// <param name="IdleTimeout"><c>pm.process_idle_timeout</c> (default 10s).</param>
/// <param name="PhpAdminValues"><c>php_admin_value[name] = value</c> lines of the pool (post_max_size, memory_limit…).</param>
internal sealed record FastCgiSpawnConfig(string Program, int MaxChildren, TimeSpan IdleTimeout, ValueDictionary PhpAdminValues);
