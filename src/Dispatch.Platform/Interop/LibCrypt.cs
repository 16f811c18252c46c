using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace Dispatch.Platform.Interop;

/// <summary>
/// Password hashes checked by the system's libcrypt (libxcrypt: bcrypt <c>$2y$</c>/<c>$2b$</c>/<c>$2a$</c>,
/// SHA-crypt <c>$5$</c> and <c>$6$</c>), never by code of ours: <c>crypt_rn(phrase, setting, data, size)</c> with
/// the stored hash as the setting, whose output is then compared with the stored hash in constant time.
/// <c>crypt_rn</c> is reentrant (its state lives in the caller's <c>struct crypt_data</c>, 32 KiB, one per call here)
/// and never returns a "failure token" string: it returns NULL on error.
/// </summary>
public static unsafe partial class LibCrypt
{
    private const string Lib = "libcrypt.so.1";

    /// <summary><c>sizeof(struct crypt_data)</c> in libxcrypt 4.x.</summary>
    private const int CryptDataSize = 32768;

    /// <summary>The longest passphrase libxcrypt accepts (CRYPT_MAX_PASSPHRASE_SIZE).</summary>
    public const int MaxPassphraseBytes = 512;

    /// <summary>The longest hash accepted (CRYPT_OUTPUT_SIZE − 1).</summary>
    public const int MaxHashBytes = 383;

    /// <summary>Loads libcrypt.so.1 now (a process that is to verify passwords calls this at start, so a missing library fails loudly there).</summary>
    /// <exception cref="DllNotFoundException">libcrypt.so.1 is not installed.</exception>
    public static void EnsureLoaded()
    {
        if (!NativeLibrary.TryLoad(Lib, typeof(LibCrypt).Assembly, null, out _))
            throw new DllNotFoundException("libcrypt.so.1 (libxcrypt) could not be loaded: password hashes cannot be verified without it");
    }

    /// <summary>True when <paramref name="hash"/> is a hash scheme this verifier accepts: bcrypt ($2y$, $2b$, $2a$) or SHA-crypt ($5$, $6$).</summary>
    public static bool IsSupportedScheme(string hash) =>
        hash.StartsWith("$2y$", StringComparison.Ordinal) || hash.StartsWith("$2b$", StringComparison.Ordinal)
        || hash.StartsWith("$2a$", StringComparison.Ordinal) || hash.StartsWith("$5$", StringComparison.Ordinal)
        || hash.StartsWith("$6$", StringComparison.Ordinal);

    /// <summary>
    /// True when <paramref name="hash"/> is a whole hash of a supported scheme — bcrypt: cost 04-31, 22 characters of
    /// salt and 31 of checksum; SHA-crypt: optional <c>rounds=N$</c>, a salt of 1-16, a checksum of 43 ($5$) or 86 ($6$)
    /// characters — and libcrypt accepts it as a setting (<c>crypt_checksalt</c>). No hash is computed, so a file of
    /// thousands of bcrypt hashes loads at once.
    /// </summary>
    public static bool IsWellFormed(string hash)
    {
        if (!IsSupportedScheme(hash) || hash.Length > MaxHashBytes || !WellFormed().IsMatch(hash))
            return false;
        if (hash[1] == '2' && int.Parse(hash.AsSpan(4, 2), System.Globalization.CultureInfo.InvariantCulture) is < 4 or > 31)
            return false;
        var setting = new byte[hash.Length + 1];
        Encoding.ASCII.GetBytes(hash, setting);
        // CRYPT_SALT_OK, or CRYPT_SALT_METHOD_LEGACY: libxcrypt calls SHA-256-crypt legacy, but still verifies it.
        fixed (byte* s = setting)
            return CryptCheckSalt(s) is 0 or 3;
    }

    /// <summary>Verifies <paramref name="password"/> against <paramref name="hash"/>; false for a wrong password, a malformed hash or a passphrase too long.</summary>
    public static bool Verify(ReadOnlySpan<byte> password, string hash)
    {
        if (!IsSupportedScheme(hash) || hash.Length > MaxHashBytes || password.Length > MaxPassphraseBytes || password.Contains((byte)0))
            return false;
        var output = Hash(password, hash);
        if (output is null)
            return false;
        var expected = Encoding.ASCII.GetBytes(hash);
        return CryptographicOperations.FixedTimeEquals(output, expected);
    }

    private static byte[]? Hash(ReadOnlySpan<byte> password, string setting)
    {
        var phrase = new byte[password.Length + 1];
        var settingBytes = new byte[Encoding.ASCII.GetByteCount(setting) + 1];
        var data = (byte*)NativeMemory.AllocZeroed(CryptDataSize);
        try
        {
            password.CopyTo(phrase);
            Encoding.ASCII.GetBytes(setting, settingBytes);
            fixed (byte* p = phrase)
            fixed (byte* s = settingBytes)
            {
                var result = CryptRn(p, s, data, CryptDataSize);
                if (result == null || *result == (byte)'*')
                    return null;
                return MemoryMarshal.CreateReadOnlySpanFromNullTerminated(result).ToArray();
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(phrase);
            NativeMemory.Clear(data, CryptDataSize);
            NativeMemory.Free(data);
        }
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"\A(?:\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}|\$5\$(?:rounds=[0-9]{1,9}\$)?[^$:\s]{1,16}\$[./A-Za-z0-9]{43}|\$6\$(?:rounds=[0-9]{1,9}\$)?[^$:\s]{1,16}\$[./A-Za-z0-9]{86})\z", System.Text.RegularExpressions.RegexOptions.CultureInvariant)]
    private static partial System.Text.RegularExpressions.Regex WellFormed();

    [LibraryImport(Lib, EntryPoint = "crypt_checksalt")]
    private static partial int CryptCheckSalt(byte* setting);

    [LibraryImport(Lib, EntryPoint = "crypt_rn")]
    private static partial byte* CryptRn(byte* phrase, byte* setting, void* data, int size);
}
