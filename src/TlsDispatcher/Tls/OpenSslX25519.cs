using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// X25519 (RFC 7748) through OpenSSL's libcrypto, which .NET's own cryptography has already loaded: .NET offers no
/// X25519, and BouncyCastle's managed one cost about a sixth of the dispatcher's CPU per TLS 1.3 handshake in a profile
/// (two scalar multiplications: the ephemeral key and the agreement), several times OpenSSL's assembly.
/// </summary>
/// <remarks>
/// Only the raw-key EVP calls are used (OpenSSL 1.1.1 and 3.x). OpenSSL refuses an all-zero shared secret (a
/// small-order peer point) in <c>EVP_PKEY_derive</c>; that failure is reported as such. Errors:
/// <see cref="OpenSslKeyHandle"/>.
/// </remarks>
internal static partial class OpenSslX25519
{
    public const int KeySize = 32;
    private const string LibCrypto = OpenSslKeyHandle.LibCrypto;
    private const int EvpPkeyX25519 = 1034; // NID_X25519

    /// <summary>A private key (and its public key, computed by OpenSSL) for one exchange.</summary>
    public static PrivateKey Generate()
    {
        Span<byte> scalar = stackalloc byte[KeySize];
        RandomNumberGenerator.Fill(scalar);
        try
        {
            return FromPrivate(scalar);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(scalar);
        }
    }

    /// <summary>A key from the given 32-byte scalar (RFC 7748 clamping is OpenSSL's).</summary>
    public static unsafe PrivateKey FromPrivate(ReadOnlySpan<byte> scalar)
    {
        if (scalar.Length != KeySize)
            throw new ArgumentException("an X25519 private key is 32 bytes", nameof(scalar));
        nint key;
        fixed (byte* p = scalar)
            key = NewRawPrivateKey(EvpPkeyX25519, 0, p, KeySize);
        if (key == 0)
            throw OpenSslKeyHandle.Failure("EVP_PKEY_new_raw_private_key");
        return new PrivateKey(key);
    }

    [LibraryImport(LibCrypto, EntryPoint = "EVP_PKEY_new_raw_private_key")]
    private static unsafe partial nint NewRawPrivateKey(int type, nint engine, byte* key, nuint length);

    [LibraryImport(LibCrypto, EntryPoint = "EVP_PKEY_new_raw_public_key")]
    private static unsafe partial nint NewRawPublicKey(int type, nint engine, byte* key, nuint length);

    [LibraryImport(LibCrypto, EntryPoint = "EVP_PKEY_get_raw_public_key")]
    private static unsafe partial int GetRawPublicKey(nint key, byte* buffer, nuint* length);

    [LibraryImport(LibCrypto, EntryPoint = "EVP_PKEY_free")]
    private static partial void FreeKey(nint key);

    [LibraryImport(LibCrypto, EntryPoint = "EVP_PKEY_CTX_new")]
    private static partial nint NewContext(nint key, nint engine);

    [LibraryImport(LibCrypto, EntryPoint = "EVP_PKEY_CTX_free")]
    private static partial void FreeContext(nint context);

    [LibraryImport(LibCrypto, EntryPoint = "EVP_PKEY_derive_init")]
    private static partial int DeriveInit(nint context);

    [LibraryImport(LibCrypto, EntryPoint = "EVP_PKEY_derive_set_peer")]
    private static partial int DeriveSetPeer(nint context, nint peer);

    [LibraryImport(LibCrypto, EntryPoint = "EVP_PKEY_derive")]
    private static unsafe partial int Derive(nint context, byte* secret, nuint* length);

    /// <summary>An OpenSSL X25519 private key (an <c>EVP_PKEY</c>).</summary>
    internal sealed class PrivateKey : OpenSslKeyHandle
    {
        internal PrivateKey(nint key)
            : base(key)
        {
        }

        /// <summary>The 32-byte public key to send.</summary>
        public unsafe byte[] PublicKey() => Use(default, static (key, _) =>
        {
            byte[] result = new byte[KeySize];
            nuint length = KeySize;
            fixed (byte* p = result)
            {
                if (GetRawPublicKey(key, p, &length) != 1 || length != KeySize)
                    throw Failure("EVP_PKEY_get_raw_public_key");
            }

            return result;
        });

        /// <summary>
        /// The shared secret with <paramref name="peerPublic"/> (32 bytes), or <see langword="null"/> when OpenSSL
        /// refuses the point (a small-order point: the secret would be all zeros).
        /// </summary>
        public unsafe byte[]? Agree(ReadOnlySpan<byte> peerPublic)
        {
            if (peerPublic.Length != KeySize)
                return null;
            return Use(peerPublic, static (key, value) =>
            {
                nint peer;
                fixed (byte* p = value)
                    peer = NewRawPublicKey(EvpPkeyX25519, 0, p, KeySize);
                if (peer == 0)
                    return Refused();
                nint context = 0;
                try
                {
                    context = NewContext(key, 0);
                    if (context == 0 || DeriveInit(context) != 1)
                        throw Failure("EVP_PKEY_derive_init");
                    if (DeriveSetPeer(context, peer) != 1)
                        return Refused();

                    byte[] secret = new byte[KeySize];
                    nuint length = KeySize;
                    fixed (byte* s = secret)
                    {
                        // OpenSSL fails the derivation of an all-zero secret (RFC 7748 section 6.1, RFC 8446 7.4.2).
                        if (Derive(context, s, &length) != 1 || length != KeySize)
                            return Refused(secret);
                    }

                    return secret;
                }
                finally
                {
                    if (context != 0)
                        FreeContext(context);
                    FreeKey(peer);
                }
            });
        }

        protected override void Free(nint key) => FreeKey(key);
    }
}
