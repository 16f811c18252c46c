using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Dispatch.Platform.Interop;
using Dispatch.Wire.Identity;

namespace Dispatch.Worker.Http;

/// <summary>
/// The login this worker runs as, for an identity vhost: every request must carry exactly that login's Basic
/// credentials, verified against its own hash (the only one this worker holds) by libcrypt. Anything else — no
/// credentials, another login, a wrong password — is not this worker's to serve (the caller answers 421 and closes,
/// so the client is routed, and authenticated, afresh). An Authorization value once verified is remembered by its
/// SHA-256 (at most <see cref="MaxRemembered"/>), so keep-alive requests do not pay bcrypt each time.
/// </summary>
/// <param name="Login">The login of this worker's pool.</param>
/// <param name="Hash">Its bcrypt or SHA-crypt hash.</param>
/// <param name="Realm">The realm of the vhost.</param>
public sealed class RequestIdentity(string Login, string Hash, string Realm)
{
    public const int MaxRemembered = 64;

    private readonly ConcurrentDictionary<string, byte> _verified = new(StringComparer.Ordinal);

    public string Login { get; } = Login;

    public string Realm { get; } = Realm;

    /// <summary>Null when the request is this worker's login; otherwise why not (for the log).</summary>
    public async ValueTask<string?> CheckAsync(IReadOnlyList<string?> authorization)
    {
        if (authorization.Count == 0)
            return "no credentials";
        if (authorization.Count > 1 || authorization[0] is not { } value)
            return "more than one Authorization header";
        var key = Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes(value)));
        if (_verified.ContainsKey(key))
            return null;
        if (!BasicCredentials.TryParse(Encoding.UTF8.GetBytes(value), out var login, out var password))
            return "credentials that are not Basic login:password";
        try
        {
            if (login != Login)
                return $"authenticated as {login}";
            var ok = await Task.Run(() => LibCrypt.Verify(password, Hash)).ConfigureAwait(false);
            if (!ok)
                return $"a wrong password for {login}";
        }
        finally
        {
            CryptographicOperations.ZeroMemory(password);
        }

        if (_verified.Count >= MaxRemembered)
            _verified.Clear();
        _verified.TryAdd(key, 0);
        return null;
    }
}
