using System.Buffers.Text;
using System.Text;

namespace Dispatch.Wire.Identity;

/// <summary>
/// HTTP Basic credentials (RFC 7617): <c>Authorization: Basic base64(login ":" password)</c>. The login is at most
/// <see cref="MaxLogin"/> characters of a safe set (those of a pool name: letters, digits, '-', '_', '.'), the
/// password at most <see cref="MaxPassword"/> bytes of UTF-8 without NUL or control characters. Used by the
/// dispatcher (first request head) and by the worker (every request).
/// </summary>
public static class BasicCredentials
{
    /// <summary>The longest login accepted.</summary>
    public const int MaxLogin = 64;

    /// <summary>The longest password accepted, in bytes (libcrypt's own limit is 512).</summary>
    public const int MaxPassword = 256;

    /// <summary>True when <paramref name="login"/> may be a login: 1-64 of letters, digits, '-', '_', '.', not starting with '.' or '-'.</summary>
    public static bool IsValidLogin(ReadOnlySpan<char> login)
    {
        if (login.IsEmpty || login.Length > MaxLogin || login[0] is '.' or '-')
            return false;
        foreach (var c in login)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('-' or '_' or '.'))
                return false;
        }

        return true;
    }

    /// <summary>
    /// Parses an Authorization field value. False (login and password empty) when it is not Basic, not valid base64,
    /// has no colon, an invalid login, or a password too long or with control characters.
    /// </summary>
    /// <param name="password">The password's bytes (the caller zeroes them after use).</param>
    public static bool TryParse(ReadOnlySpan<byte> value, out string login, out byte[] password)
    {
        login = string.Empty;
        password = [];
        value = value.Trim(" \t"u8);
        if (value.Length < 6 || !Ascii.EqualsIgnoreCase(value[..5], "basic"u8) || value[5] != (byte)' ')
            return false;
        var encoded = value[6..].TrimStart(" "u8);
        if (encoded.Length == 0 || encoded.Length > 4 * ((MaxLogin + 1 + MaxPassword + 2) / 3))
            return false;
        Span<byte> decoded = stackalloc byte[Base64.GetMaxDecodedFromUtf8Length(encoded.Length)];
        try
        {
            if (Base64.DecodeFromUtf8(encoded, decoded, out var consumed, out var written) != System.Buffers.OperationStatus.Done || consumed != encoded.Length)
                return false;
            var text = decoded[..written];
            var colon = text.IndexOf((byte)':');
            if (colon <= 0)
                return false;
            var user = text[..colon];
            var secret = text[(colon + 1)..];
            if (secret.Length > MaxPassword)
                return false;
            foreach (var b in secret)
            {
                if (b < 0x20 || b == 0x7f)
                    return false;
            }

            var name = Encoding.ASCII.GetString(user);
            if (!Ascii.IsValid(user) || !IsValidLogin(name))
                return false;
            login = name;
            password = secret.ToArray();
            return true;
        }
        finally
        {
            decoded.Clear();
        }
    }

    /// <summary>
    /// Finds the Authorization field of a complete HTTP/1.x request head (request line, fields, empty line).
    /// Returns the number of Authorization fields found (0, 1, or more: a request with two is refused by the callers)
    /// and, when there is exactly one, its value.
    /// </summary>
    public static int FindAuthorization(ReadOnlySpan<byte> head, out Range value)
    {
        value = default;
        var count = 0;
        var lineEnd = head.IndexOf("\r\n"u8);
        if (lineEnd < 0)
            return 0;
        var offset = lineEnd + 2;
        while (offset < head.Length)
        {
            var rest = head[offset..];
            var eol = rest.IndexOf("\r\n"u8);
            if (eol <= 0)
                break;
            var field = rest[..eol];
            var colon = field.IndexOf((byte)':');
            if (colon == 13 && Ascii.EqualsIgnoreCase(field[..13], "authorization"u8))
            {
                count++;
                value = new Range(offset + 14, offset + eol);
            }

            offset += eol + 2;
        }

        return count;
    }
}
