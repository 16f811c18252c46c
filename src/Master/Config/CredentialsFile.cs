using Dispatch.Master.Files;
using Dispatch.Platform.Interop;
using Dispatch.Wire.Identity;

namespace Dispatch.Master.Config;

/// <summary>
/// An htpasswd credentials file of an identity vhost, read by the master as root with the checks certificates get:
/// every directory on the way owned by root and writable by no one else, the file itself regular, root-owned, not
/// writable by group or others, not a symlink (opened with O_NOFOLLOW and checked again on the descriptor), at most
/// <see cref="MaxFileBytes"/>. Lines are <c>login:hash</c> (bcrypt <c>$2y$</c>/<c>$2b$</c>/<c>$2a$</c>, SHA-crypt
/// <c>$5$</c>/<c>$6$</c>, each checked by libcrypt), or <c>login:!</c> (a login kept but refused), blank, or
/// <c>#</c> comments. Any other line is an error naming the file and the line number.
/// </summary>
internal static unsafe class CredentialsFile
{
    public const int MaxFileBytes = 1024 * 1024;

    public const int MaxLogins = 4096;

    /// <summary>The logins in file order; a disabled login (<c>login:!</c>) has a null hash.</summary>
    public static IReadOnlyList<(string Login, string? Hash)> Load(string path)
    {
        if (!Path.IsPathRooted(path))
            throw new ConfigFileException($"'{path}' is not an absolute path");
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full) ?? "/";
        if (PathSafety.CheckRootOwned(dir) is { } unsafeDir)
            throw new ConfigFileException($"{full}: {unsafeDir}");
        var text = Read(full);
        var users = new List<(string, string?)>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var lineNumber = 0;
        foreach (var raw in text.Split('\n'))
        {
            lineNumber++;
            var line = raw.TrimEnd('\r');
            if (line.Length == 0 || line.TrimStart().StartsWith('#'))
                continue;
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
                throw new ConfigFileException($"{full}:{lineNumber}: not 'login:hash'");
            var login = line[..colon];
            var hash = line[(colon + 1)..];
            if (!BasicCredentials.IsValidLogin(login))
                throw new ConfigFileException($"{full}:{lineNumber}: '{Printable(login)}' is not a login (1-64 letters, digits, '-', '_', '.')");
            if (!seen.Add(login))
                throw new ConfigFileException($"{full}:{lineNumber}: login '{login}' is listed twice");
            if (hash == "!")
            {
                users.Add((login, null));
                continue;
            }

            if (!LibCrypt.IsSupportedScheme(hash))
                throw new ConfigFileException($"{full}:{lineNumber}: the hash of '{login}' is not bcrypt ($2y$) or SHA-crypt ($5$, $6$) (htpasswd -B makes bcrypt; MD5 $apr1$, SHA1 {{SHA}} and crypt(3) DES are refused)");
            if (!LibCrypt.IsWellFormed(hash))
                throw new ConfigFileException($"{full}:{lineNumber}: the hash of '{login}' is malformed (libcrypt refuses it)");
            users.Add((login, hash));
            if (users.Count > MaxLogins)
                throw new ConfigFileException($"{full}:{lineNumber}: more than {MaxLogins} logins");
        }

        return users;
    }

    private static string Printable(string s) => new([.. s.Take(64).Select(c => char.IsControl(c) ? '?' : c)]);

    private static string Read(string path)
    {
        var buffer = RootOwnedFile.TryRead(path, MaxFileBytes, out var problem) ?? throw new ConfigFileException(problem!);
        if (!System.Text.Ascii.IsValid(buffer))
            throw new ConfigFileException($"{path}: not ASCII text");
        return System.Text.Encoding.ASCII.GetString(buffer);
    }
}
