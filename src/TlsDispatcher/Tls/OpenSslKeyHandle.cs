using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// What <see cref="OpenSslP256"/> and <see cref="OpenSslX25519"/> share: libcrypto's name, the error handling that
/// ends every failure, and the key handle itself — an OpenSSL key freed on dispose (or, if a handshake is abandoned,
/// by the finalizer), kept alive for the whole of each operation on it (<see cref="Use{TResult}"/>).
/// </summary>
/// <remarks>
/// Any failure empties OpenSSL's thread-local error queue, so that .NET's next OpenSSL call on this thread does not
/// find a stale error there: a call that cannot fail on valid input throws (<see cref="Failure"/>); an agreement the
/// peer's value makes impossible returns <see langword="null"/> (<see cref="Refused"/>), which the caller turns into
/// the handshake's <c>illegal_parameter</c> alert.
/// </remarks>
internal abstract partial class OpenSslKeyHandle : SafeHandle
{
    /// <summary>OpenSSL 3's libcrypto, which .NET's own cryptography has already loaded.</summary>
    public const string LibCrypto = "libcrypto.so.3";

    protected OpenSslKeyHandle(nint key)
        : base(0, ownsHandle: true) => SetHandle(key);

    /// <summary>One operation on the raw key, with the bytes it reads.</summary>
    protected delegate TResult KeyOperation<TResult>(nint key, ReadOnlySpan<byte> input);

    public override bool IsInvalid => handle == 0;

    /// <summary>The failure of <paramref name="call"/>, with OpenSSL's first queued error; the queue is emptied.</summary>
    public static CryptographicException Failure(string call)
    {
        ulong code = ErrGetError();
        ClearError();
        return new CryptographicException($"{call} failed (OpenSSL error 0x{code:X})");
    }

    /// <summary>
    /// The OpenSSL object in <paramref name="slot"/>, made by <paramref name="create"/> on first use and kept for the life
    /// of the process (a curve's group, a fetched digest). Two threads that find it missing at once may both make one;
    /// the one that loses the exchange frees its own with <paramref name="free"/>.
    /// </summary>
    internal static nint Once<TState>(ref nint slot, TState state, Func<TState, nint> create, Action<nint> free, string call)
    {
        nint made = Volatile.Read(ref slot);
        if (made != 0)
            return made;
        made = create(state);
        if (made == 0)
            throw Failure(call);
        nint first = Interlocked.CompareExchange(ref slot, made, 0);
        if (first == 0)
            return made;
        free(made);
        return first;
    }

    /// <summary>
    /// An agreement OpenSSL refused (a point off the curve, a shared point at infinity, an all-zero X25519 secret):
    /// the error queue emptied, whatever <paramref name="secret"/> holds wiped, and <see langword="null"/>.
    /// </summary>
    public static byte[]? Refused(byte[]? secret = null)
    {
        ClearError();
        if (secret is not null)
            CryptographicOperations.ZeroMemory(secret);
        return null;
    }

    [LibraryImport(LibCrypto, EntryPoint = "ERR_clear_error")]
    public static partial void ClearError();

    /// <summary>Runs <paramref name="operation"/> on the key, which cannot be freed until it returns.</summary>
    protected TResult Use<TResult>(ReadOnlySpan<byte> input, KeyOperation<TResult> operation)
    {
        bool added = false;
        try
        {
            DangerousAddRef(ref added);
            return operation(handle, input);
        }
        finally
        {
            if (added)
                DangerousRelease();
        }
    }

    /// <summary>Frees the key (<c>EC_KEY_free</c>, <c>EVP_PKEY_free</c>).</summary>
    protected abstract void Free(nint key);

    protected sealed override bool ReleaseHandle()
    {
        Free(handle);
        return true;
    }

    [LibraryImport(LibCrypto, EntryPoint = "ERR_get_error")]
    private static partial ulong ErrGetError();
}
