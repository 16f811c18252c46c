using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// HMAC and the key schedules built on it — HKDF-Extract and HKDF-Expand (RFC 5869, TLS 1.3), the TLS 1.2 PRF
/// (RFC 5246 section 5) — over OpenSSL's <c>HMAC_CTX</c> with a digest fetched once per process.
/// </summary>
/// <remarks>
/// <para>.NET's <see cref="HKDF"/> and HMACs go through OpenSSL 3's <c>EVP_KDF</c> and <c>EVP_MAC</c>, which look the
/// digest up by name in the provider's method store (locks, string compares, allocations) on every call; for the few
/// blocks a TLS key schedule hashes that look-up is most of the cost. HKDF was 9% of the dispatcher's CPU per TLS 1.3
/// handshake in a profile (about 23 calls), the TLS 1.2 PRF 4% (docs/operations.md, "Where the CPU goes"). Here the
/// digest (<c>EVP_MD_fetch</c>) is fetched once and shared: a fetched <c>EVP_MD</c> is reference-counted and only read
/// by the contexts that use it (openssl-threads(7)); each derivation has its own <c>HMAC_CTX</c>, freed (and
/// cleansed, with the key state it holds) before it returns.</para>
/// <para><c>HMAC_CTX</c> is deprecated in OpenSSL 3.0 but exported by every libcrypto.so.3; <c>EVP_MD_fetch</c> is 3.0's.
/// Failures throw (<see cref="OpenSslKeyHandle.Failure"/>): none of these calls fails on valid input.</para>
/// </remarks>
internal static partial class OpenSslHmac
{
    private const string LibCrypto = OpenSslKeyHandle.LibCrypto;
    private const int MaxHashSize = 64;

    private static nint _sha256;
    private static nint _sha384;
    private static nint _sha512;

    /// <summary>HKDF-Extract: the PRK, HMAC(<paramref name="salt"/>, <paramref name="ikm"/>).</summary>
    /// <remarks>An empty salt is HashLen zeros (RFC 5869 2.2): HMAC pads a short key with zeros, so both give the same.</remarks>
    public static byte[] Extract(HashAlgorithmName hash, ReadOnlySpan<byte> salt, ReadOnlySpan<byte> ikm)
    {
        (nint md, int size) = Digest(hash);
        byte[] prk = new byte[size];
        nint context = Begin(md, salt);
        try
        {
            Append(context, ikm);
            Finish(context, prk);
        }
        finally
        {
            FreeContext(context);
        }

        return prk;
    }

    /// <summary>HKDF-Expand: <paramref name="output"/> filled from <paramref name="prk"/> and <paramref name="info"/>.</summary>
    /// <exception cref="ArgumentException">The PRK is shorter than the hash, or more than 255 blocks are asked for (as .NET's <see cref="HKDF.Expand(HashAlgorithmName, ReadOnlySpan{byte}, Span{byte}, ReadOnlySpan{byte})"/>).</exception>
    public static void Expand(HashAlgorithmName hash, ReadOnlySpan<byte> prk, ReadOnlySpan<byte> info, Span<byte> output)
    {
        (nint md, int size) = Digest(hash);
        if (prk.Length < size)
            throw new ArgumentException($"a {hash.Name} PRK is at least {size} bytes", nameof(prk));
        if (output.Length > 255 * size)
            throw new ArgumentException($"HKDF-Expand gives at most {255 * size} bytes with {hash.Name}", nameof(output));
        Span<byte> block = stackalloc byte[MaxHashSize];
        block = block[..size];
        nint context = Begin(md, prk);
        try
        {
            // T(i) = HMAC(PRK, T(i-1) | info | i), T(0) empty.
            Span<byte> counter = stackalloc byte[1];
            for (int pos = 0, i = 1; pos < output.Length; pos += size, i++)
            {
                if (i > 1)
                {
                    Restart(context);
                    Append(context, block);
                }

                Append(context, info);
                counter[0] = (byte)i;
                Append(context, counter);
                Finish(context, block);
                block[..Math.Min(size, output.Length - pos)].CopyTo(output[pos..]);
            }
        }
        finally
        {
            FreeContext(context);
            CryptographicOperations.ZeroMemory(block);
        }
    }

    /// <summary>The TLS 1.2 PRF: <paramref name="output"/> = P_hash(<paramref name="secret"/>, <paramref name="labelSeed"/>).</summary>
    public static void Prf(HashAlgorithmName hash, ReadOnlySpan<byte> secret, ReadOnlySpan<byte> labelSeed, Span<byte> output)
    {
        (nint md, int size) = Digest(hash);
        Span<byte> buffers = stackalloc byte[2 * MaxHashSize];
        Span<byte> a = buffers[..size];
        Span<byte> block = buffers.Slice(MaxHashSize, size);
        nint context = Begin(md, secret);
        try
        {
            // A(1) = HMAC(secret, label + seed); each block HMAC(secret, A(i) + label + seed); A(i+1) = HMAC(secret, A(i)).
            Append(context, labelSeed);
            Finish(context, a);
            for (int pos = 0; pos < output.Length; pos += size)
            {
                Restart(context);
                Append(context, a);
                Append(context, labelSeed);
                Finish(context, block);
                block[..Math.Min(size, output.Length - pos)].CopyTo(output[pos..]);
                if (pos + size < output.Length)
                {
                    Restart(context);
                    Append(context, a);
                    Finish(context, a);
                }
            }
        }
        finally
        {
            FreeContext(context);
            CryptographicOperations.ZeroMemory(buffers);
        }
    }

    /// <summary>The fetched digest and its size; SHA-256, SHA-384 and SHA-512, the hashes of TLS's key schedules.</summary>
    private static (nint Md, int Size) Digest(HashAlgorithmName hash)
    {
        if (hash == HashAlgorithmName.SHA256)
            return (Fetched(ref _sha256, "SHA256"), 32);
        if (hash == HashAlgorithmName.SHA384)
            return (Fetched(ref _sha384, "SHA384"), 48);
        if (hash == HashAlgorithmName.SHA512)
            return (Fetched(ref _sha512, "SHA512"), 64);
        throw new ArgumentException($"{hash.Name} is not a hash of TLS's key schedules", nameof(hash));
    }

    /// <summary>The digest in <paramref name="slot"/>, fetched on first use (<see cref="OpenSslKeyHandle.Once"/>).</summary>
    private static nint Fetched(ref nint slot, string name) =>
        OpenSslKeyHandle.Once(ref slot, name, static n => FetchDigest(0, n, 0), FreeDigest, "EVP_MD_fetch");

    private static unsafe nint Begin(nint md, ReadOnlySpan<byte> key)
    {
        nint context = NewContext();
        if (context == 0)
            throw OpenSslKeyHandle.Failure("HMAC_CTX_new");
        int done;
        // A null key pointer would mean "keep the key"; an empty key must be a key of zeros.
        byte zero = 0;
        fixed (byte* k = key)
            done = Init(context, key.IsEmpty ? &zero : k, key.Length, md, 0);
        if (done != 1)
        {
            FreeContext(context);
            throw OpenSslKeyHandle.Failure("HMAC_Init_ex");
        }

        return context;
    }

    /// <summary>Starts the next HMAC with the same key and digest.</summary>
    private static unsafe void Restart(nint context)
    {
        if (Init(context, null, 0, 0, 0) != 1)
            throw OpenSslKeyHandle.Failure("HMAC_Init_ex");
    }

    private static unsafe void Append(nint context, ReadOnlySpan<byte> data)
    {
        int done;
        fixed (byte* d = data)
            done = Update(context, d, (nuint)data.Length);
        if (done != 1)
            throw OpenSslKeyHandle.Failure("HMAC_Update");
    }

    private static unsafe void Finish(nint context, Span<byte> output)
    {
        uint length = 0;
        int done;
        fixed (byte* o = output)
            done = Final(context, o, &length);
        if (done != 1 || length != output.Length)
            throw OpenSslKeyHandle.Failure("HMAC_Final");
    }

    [LibraryImport(LibCrypto, EntryPoint = "EVP_MD_fetch", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint FetchDigest(nint libraryContext, string algorithm, nint properties);

    [LibraryImport(LibCrypto, EntryPoint = "EVP_MD_free")]
    private static partial void FreeDigest(nint md);

    [LibraryImport(LibCrypto, EntryPoint = "HMAC_CTX_new")]
    private static partial nint NewContext();

    [LibraryImport(LibCrypto, EntryPoint = "HMAC_CTX_free")]
    private static partial void FreeContext(nint context);

    [LibraryImport(LibCrypto, EntryPoint = "HMAC_Init_ex")]
    private static unsafe partial int Init(nint context, byte* key, int keyLength, nint md, nint engine);

    [LibraryImport(LibCrypto, EntryPoint = "HMAC_Update")]
    private static unsafe partial int Update(nint context, byte* data, nuint length);

    [LibraryImport(LibCrypto, EntryPoint = "HMAC_Final")]
    private static unsafe partial int Final(nint context, byte* output, uint* length);
}
