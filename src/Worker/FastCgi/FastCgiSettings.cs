namespace Dispatch.Worker.FastCgi;

/// <summary>
/// A vhost's FastCGI application (PHP): <c>*.php</c> under the document root, and the <c>tryFiles</c> fallback script,
/// run by it. Exactly one of <paramref name="Socket"/> (an operator-run php-fpm) or <paramref name="Spawn"/> (a php-fpm
/// the worker starts as the tenant, inside its own jail).
/// </summary>
/// <param name="Socket">Absolute path of the application's Unix socket.</param>
/// <param name="Spawn">The php-fpm the worker starts and supervises.</param>
/// <param name="ConnectTimeout">How long connecting may take before the client gets 504; null or not positive:
/// <see cref="DefaultConnectTimeout"/>.</param>
/// <param name="ReadTimeout">How long the application may stay silent (no record) while we wait for its answer before
/// the client gets 504 (or, once the response started, the connection is aborted); re-armed by each request body chunk
/// passed on. Null or not positive: <see cref="DefaultReadTimeout"/>.</param>
public sealed record FastCgiSettings(
    string? Socket,
    FastCgiSpawnSettings? Spawn = null,
    TimeSpan? ConnectTimeout = null,
    TimeSpan? ReadTimeout = null)
{
    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(5);

    public static readonly TimeSpan DefaultReadTimeout = TimeSpan.FromSeconds(60);

    internal TimeSpan EffectiveConnectTimeout => ConnectTimeout is { } t && t > TimeSpan.Zero ? t : DefaultConnectTimeout;

    internal TimeSpan EffectiveReadTimeout => ReadTimeout is { } t && t > TimeSpan.Zero ? t : DefaultReadTimeout;
}
