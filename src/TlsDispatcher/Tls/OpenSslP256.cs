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
/// <para>The curve (<c>EC_GROUP</c>) is built once per process (<see cref="SharedGroup"/>) and each key gets a copy of
/// it (<c>EC_KEY_set_group</c> duplicates it): building it from the curve's name for every key cost about as much as
/// generating the key, 6% of the dispatcher's CPU per TLS 1.2 handshake in a profile. OpenSSL objects are safe to
/// share between threads as long as the calls made on them do not modify them (openssl-threads(7)); the shared group
/// is only ever read (duplicated), and never freed.</para>
/// <para>Only EC_KEY/EC_GROUP/EC_POINT calls that OpenSSL 1.1.1 and 3.x both export. Errors: <see cref="OpenSslKeyHandle"/>.</para>
/// </remarks>
internal static partial class OpenSslP256
{
    /// <summary>An uncompressed point: 0x04, X, Y.</summary>
    public const int PointSize = 1 + (2 * CoordinateSize);

    /// <summary>A coordinate, and the shared secret (the X coordinate of the shared point).</summary>
    public const int CoordinateSize = 32;

    private const string LibCrypto = OpenSslKeyHandle.LibCrypto;
    private const int NidP256 = 415; // NID_X9_62_prime256v1
    private const int PointConversionUncompressed = 4;

    private static nint _group;

    /// <summary>
    /// P-256's <c>EC_GROUP</c>, built on first use and kept for the life of the process. Two threads that find it
    /// missing at once may both build one; the one that loses the exchange frees its own.
    /// </summary>
    internal static nint SharedGroup =>
        OpenSslKeyHandle.Once(ref _group, NidP256, static nid => NewGroupByCurveName(nid), FreeGroup, "EC_GROUP_new_by_curve_name");

    /// <summary>A fresh key pair for one exchange.</summary>
    public static PrivateKey Generate()
    {
        nint group = SharedGroup;
        nint key = NewKey();
        if (key == 0)
            throw OpenSslKeyHandle.Failure("EC_KEY_new");
        var result = new PrivateKey(key);
        if (SetGroup(key, group) != 1)
        {
            result.Dispose();
            throw OpenSslKeyHandle.Failure("EC_KEY_set_group");
        }

        if (GenerateKey(key) != 1)
        {
            result.Dispose();
            throw OpenSslKeyHandle.Failure("EC_KEY_generate_key");
        }

        return result;
    }

    [LibraryImport(LibCrypto, EntryPoint = "EC_GROUP_new_by_curve_name")]
    private static partial nint NewGroupByCurveName(int nid);

    [LibraryImport(LibCrypto, EntryPoint = "EC_GROUP_free")]
    private static partial void FreeGroup(nint group);

    [LibraryImport(LibCrypto, EntryPoint = "EC_KEY_new")]
    private static partial nint NewKey();

    [LibraryImport(LibCrypto, EntryPoint = "EC_KEY_set_group")]
    private static partial int SetGroup(nint key, nint group);

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

    /// <summary>An OpenSSL P-256 key pair (an <c>EC_KEY</c>).</summary>
    internal sealed class PrivateKey : OpenSslKeyHandle
    {
        internal PrivateKey(nint key)
            : base(key)
        {
        }

        /// <summary>The public point to send, uncompressed (RFC 8446 4.2.8.2, RFC 8422 5.4.1).</summary>
        public unsafe byte[] PublicKey() => Use(default, static (key, _) =>
        {
            byte[] result = new byte[PointSize];
            fixed (byte* p = result)
            {
                if (PointToOctets(Group(key), PublicPoint(key), PointConversionUncompressed, p, PointSize, 0) != PointSize)
                    throw Failure("EC_POINT_point2oct");
            }

            return result;
        });

        /// <summary>
        /// The shared secret with <paramref name="peerPoint"/> (an uncompressed point; 32 bytes), or
        /// <see langword="null"/> when the point is not one of the curve's or the shared point is the identity.
        /// </summary>
        public unsafe byte[]? Agree(ReadOnlySpan<byte> peerPoint)
        {
            if (peerPoint.Length != PointSize || peerPoint[0] != 0x04)
                return null;
            return Use(peerPoint, static (key, point) =>
            {
                nint group = Group(key);
                nint peer = NewPoint(group);
                if (peer == 0)
                    throw Failure("EC_POINT_new");
                try
                {
                    fixed (byte* p = point)
                    {
                        if (OctetsToPoint(group, peer, p, PointSize, 0) != 1)
                            return Refused(); // not on the curve, or a coordinate not below p
                    }

                    byte[] secret = new byte[CoordinateSize];
                    fixed (byte* s = secret)
                    {
                        if (ComputeKey(s, CoordinateSize, peer, key, 0) != CoordinateSize)
                            return Refused(secret); // the shared point is the identity
                    }

                    return secret;
                }
                finally
                {
                    FreePoint(peer);
                }
            });
        }

        protected override void Free(nint key) => FreeKey(key);
    }
}
