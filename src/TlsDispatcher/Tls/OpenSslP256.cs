using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// Ephemeral P-256 ECDH (TLS 1.2 ECDHE, TLS 1.3 secp256r1) through OpenSSL's libcrypto, which .NET's own cryptography
/// has already loaded. .NET's <see cref="ECDiffieHellman"/> validated the client's point twice with a full check, each
/// a scalar multiplication as costly as the agreement itself: importing it (<c>EC_KEY_check_key</c>, n·Q = O) and
/// deriving (<c>EVP_PKEY_derive_set_peer</c>'s public check, the same again). That was 35% of the dispatcher's CPU per
/// TLS 1.2 ECDHE handshake in a profile (docs/operations.md, "Performance").
/// </summary>
/// <remarks>
/// <para>The check kept is the one that matters on a curve of cofactor 1 (NIST SP 800-56A's partial validation, which
/// it allows for ephemeral keys): the uncompressed point decodes (coordinates below p) and lies on the curve, which
/// <c>EC_POINT_oct2point</c> verifies; every such point other than the identity (which has no uncompressed encoding)
/// is in the group of prime order, so n·Q = O holds without computing it. A shared point at infinity fails the
/// agreement (<c>ECDH_compute_key</c>).</para>
/// <para>Only EC_KEY/EC_POINT calls that OpenSSL 1.1.1 and 3.x both export. Any failure empties OpenSSL's thread-local
/// error queue, so that .NET's next OpenSSL call does not find a stale error there.</para>
/// </remarks>
internal static partial class OpenSslP256
{
    /// <summary>An uncompressed point: 0x04, X, Y.</summary>
    public const int PointSize = 1 + (2 * CoordinateSize);

    /// <summary>A coordinate, and the shared secret (the X coordinate of the shared point).</summary>
    public const int CoordinateSize = 32;

    private const string LibCrypto = "libcrypto.so.3";
    private const int NidP256 = 415; // NID_X9_62_prime256v1
    private const int PointConversionUncompressed = 4;

    /// <summary>A fresh key pair for one exchange.</summary>
    public static PrivateKey Generate()
    {
        nint key = NewKeyByCurveName(NidP256);
        if (key == 0)
            throw Failure("EC_KEY_new_by_curve_name");
        var result = new PrivateKey(key);
        if (GenerateKey(key) != 1)
        {
            result.Dispose();
            throw Failure("EC_KEY_generate_key");
        }

        return result;
    }

    private static CryptographicException Failure(string call)
    {
        ulong code = ErrGetError();
        ClearError();
        return new CryptographicException($"{call} failed (OpenSSL error 0x{code:X})");
    }

    [LibraryImport(LibCrypto, EntryPoint = "EC_KEY_new_by_curve_name")]
    private static partial nint NewKeyByCurveName(int nid);

    [LibraryImport(LibCrypto, EntryPoint = "EC_KEY_generate_key")]
    private static partial int GenerateKey(nint key);

    [LibraryImport(LibCrypto, EntryPoint = "EC_KEY_free")]
    private static partial void FreeKey(nint key);

    [LibraryImport(LibCrypto, EntryPoint = "EC_KEY_get0_group")]
    private static partial nint Group(nint key);

    [LibraryImport(LibCrypto, EntryPoint = "EC_KEY_get0_public_key")]
    private static partial nint PublicPoint(nint key);

    [LibraryImport(LibCrypto, EntryPoint = "EC_POINT_point2oct")]
    private static unsafe partial nuint PointToOctets(nint group, nint point, int form, byte* buffer, nuint length, nint context);

    [LibraryImport(LibCrypto, EntryPoint = "EC_POINT_new")]
    private static partial nint NewPoint(nint group);

    [LibraryImport(LibCrypto, EntryPoint = "EC_POINT_free")]
    private static partial void FreePoint(nint point);

    [LibraryImport(LibCrypto, EntryPoint = "EC_POINT_oct2point")]
    private static unsafe partial int OctetsToPoint(nint group, nint point, byte* buffer, nuint length, nint context);

    [LibraryImport(LibCrypto, EntryPoint = "ECDH_compute_key")]
    private static unsafe partial int ComputeKey(byte* secret, nuint length, nint peer, nint key, nint kdf);

    [LibraryImport(LibCrypto, EntryPoint = "ERR_get_error")]
    private static partial ulong ErrGetError();

    [LibraryImport(LibCrypto, EntryPoint = "ERR_clear_error")]
    private static partial void ClearError();

    /// <summary>An OpenSSL P-256 key pair; freed on dispose (or, if a handshake is abandoned, by the finalizer).</summary>
    internal sealed class PrivateKey : SafeHandle
    {
        internal PrivateKey(nint key)
            : base(0, ownsHandle: true) => SetHandle(key);

        public override bool IsInvalid => handle == 0;

        /// <summary>The public point to send, uncompressed (RFC 8446 4.2.8.2, RFC 8422 5.4.1).</summary>
        public unsafe byte[] PublicKey()
        {
            byte[] result = new byte[PointSize];
            bool added = false;
            try
            {
                DangerousAddRef(ref added);
                fixed (byte* p = result)
                {
                    if (PointToOctets(Group(handle), PublicPoint(handle), PointConversionUncompressed, p, PointSize, 0) != PointSize)
                        throw Failure("EC_POINT_point2oct");
                }
            }
            finally
            {
                if (added)
                    DangerousRelease();
            }

            return result;
        }

        /// <summary>
        /// The shared secret with <paramref name="peerPoint"/> (an uncompressed point; 32 bytes), or
        /// <see langword="null"/> when the point is not one of the curve's or the shared point is the identity.
        /// </summary>
        public unsafe byte[]? Agree(ReadOnlySpan<byte> peerPoint)
        {
            if (peerPoint.Length != PointSize || peerPoint[0] != 0x04)
                return null;
            bool added = false;
            nint peer = 0;
            try
            {
                DangerousAddRef(ref added);
                nint group = Group(handle);
                peer = NewPoint(group);
                if (peer == 0)
                    throw Failure("EC_POINT_new");
                int decoded;
                fixed (byte* p = peerPoint)
                    decoded = OctetsToPoint(group, peer, p, PointSize, 0);
                if (decoded != 1)
                {
                    // Not on the curve, or a coordinate not below p.
                    ClearError();
                    return null;
                }

                byte[] secret = new byte[CoordinateSize];
                int length;
                fixed (byte* s = secret)
                    length = ComputeKey(s, CoordinateSize, peer, handle, 0);
                if (length != CoordinateSize)
                {
                    ClearError();
                    CryptographicOperations.ZeroMemory(secret);
                    return null;
                }

                return secret;
            }
            finally
            {
                if (peer != 0)
                    FreePoint(peer);
                if (added)
                    DangerousRelease();
            }
        }

        protected override bool ReleaseHandle()
        {
            FreeKey(handle);
            return true;
        }
    }
}
