using System.Buffers.Binary;
using System.Security.Cryptography;
using Org.BouncyCastle.Crypto.Tls;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// BouncyCastle cipher factory whose record protection runs in .NET (OpenSSL, AES-NI):
/// AES-128-GCM, AES-256-GCM (RFC 5288) and ChaCha20-Poly1305 (RFC 7905), TLS 1.2 only.
/// Anything else is refused with internal_error (the server never negotiates it).
/// Stateless and shareable.
/// </summary>
public sealed class DotNetTlsCipherFactory : TlsCipherFactory
{
    /// <summary>The shared instance.</summary>
    public static DotNetTlsCipherFactory Instance { get; } = new();

    /// <inheritdoc/>
    public TlsCipher CreateCipher(TlsContext context, int encryptionAlgorithm, int macAlgorithm)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (macAlgorithm != MacAlgorithm.cls_null || !TlsUtilities.IsTlsV12(context))
            throw new TlsFatalAlert(AlertDescription.internal_error);

        return encryptionAlgorithm switch
        {
            EncryptionAlgorithm.AES_128_GCM => DotNetAeadCipher.Create(context, AeadKind.AesGcm, 16),
            EncryptionAlgorithm.AES_256_GCM => DotNetAeadCipher.Create(context, AeadKind.AesGcm, 32),
            EncryptionAlgorithm.CHACHA20_POLY1305 when ChaCha20Poly1305.IsSupported
                => DotNetAeadCipher.Create(context, AeadKind.ChaCha20Poly1305, 32),
            _ => throw new TlsFatalAlert(AlertDescription.internal_error),
        };
    }
}

/// <summary>The AEAD algorithm of a <see cref="DotNetAeadCipher"/>.</summary>
public enum AeadKind
{
    /// <summary>AES-GCM, 8-byte explicit nonce.</summary>
    AesGcm,

    /// <summary>ChaCha20-Poly1305, no explicit nonce.</summary>
    ChaCha20Poly1305,
}

/// <summary>
/// A TLS 1.2 AEAD record cipher backed by <see cref="AesGcm"/> or <see cref="ChaCha20Poly1305"/>.
/// </summary>
/// <remarks>
/// <para>Record layout and nonces:</para>
/// <code>
/// additional_data = seq_num(8) || type(1) || version(2) || plaintext length(2)      (RFC 5246 6.2.3.3)
/// AES-GCM  (RFC 5288):  nonce = salt(4, the key block's IV) || explicit(8);
///                       record = explicit(8) || ciphertext || tag(16); explicit = our write sequence number
///                       (unique per key, as RFC 5288 3 allows and BouncyCastle/OpenSSL do); when decrypting the
///                       peer's explicit part is used as sent.
/// ChaCha20-Poly1305 (RFC 7905): nonce = iv(12) XOR (0^32 || seq_num(64)), big-endian; record = ciphertext || tag(16).
/// key_block = PRF(master_secret, "key expansion", server_random || client_random):
///             client_write_key, server_write_key, client_write_IV, server_write_IV (no MAC keys for AEAD).
/// </code>
/// <para>Decrypted handshake records are counted: after the Finished message the only handshake
/// message a client may send is a renegotiation ClientHello (refused), so their total is capped to keep
/// BouncyCastle from buffering a huge announced handshake message.</para>
/// <para>Not thread-safe; BouncyCastle calls it under the session's lock.</para>
/// </remarks>
public sealed class DotNetAeadCipher : TlsCipher, IDisposable
{
    /// <summary>Most decrypted handshake bytes accepted over the connection's life (Finished plus refused renegotiation attempts).</summary>
    public const int MaxEncryptedHandshakeBytes = 64 * 1024;

    private const int TagLength = 16;
    private const int GcmExplicitNonceLength = 8;

    private readonly AeadKind _kind;
    private readonly AesGcm? _encryptGcm;
    private readonly AesGcm? _decryptGcm;
    private readonly ChaCha20Poly1305? _encryptChaCha;
    private readonly ChaCha20Poly1305? _decryptChaCha;
    private readonly byte[] _encryptIv;
    private readonly byte[] _decryptIv;
    private readonly ushort _version;
    private int _handshakeBytes;

    /// <summary>Creates a cipher from raw keys (exposed for tests and benchmarks; the server uses <see cref="DotNetTlsCipherFactory"/>).</summary>
    /// <param name="kind">AES-GCM or ChaCha20-Poly1305.</param>
    /// <param name="encryptKey">Our write key (16 or 32 bytes for AES-GCM, 32 for ChaCha20-Poly1305).</param>
    /// <param name="encryptIv">Our write IV (4 bytes of salt for AES-GCM, 12 bytes for ChaCha20-Poly1305).</param>
    /// <param name="decryptKey">The peer's write key.</param>
    /// <param name="decryptIv">The peer's write IV.</param>
    /// <param name="version">Protocol version in the additional data (0x0303).</param>
    public DotNetAeadCipher(AeadKind kind, ReadOnlySpan<byte> encryptKey, ReadOnlySpan<byte> encryptIv, ReadOnlySpan<byte> decryptKey, ReadOnlySpan<byte> decryptIv, ushort version)
    {
        int ivLength = kind == AeadKind.AesGcm ? 4 : 12;
        if (encryptIv.Length != ivLength || decryptIv.Length != ivLength)
            throw new ArgumentException($"IV must be {ivLength} bytes");
        _kind = kind;
        _version = version;
        _encryptIv = encryptIv.ToArray();
        _decryptIv = decryptIv.ToArray();
        if (kind == AeadKind.AesGcm)
        {
            _encryptGcm = new AesGcm(encryptKey, TagLength);
            _decryptGcm = new AesGcm(decryptKey, TagLength);
        }
        else
        {
            _encryptChaCha = new ChaCha20Poly1305(encryptKey);
            _decryptChaCha = new ChaCha20Poly1305(decryptKey);
        }
    }

    private int ExplicitNonceLength => _kind == AeadKind.AesGcm ? GcmExplicitNonceLength : 0;

    internal static DotNetAeadCipher Create(TlsContext context, AeadKind kind, int keyLength)
    {
        int ivLength = kind == AeadKind.AesGcm ? 4 : 12;
        SecurityParameters sp = context.SecurityParameters;
        byte[] seed = new byte[64];
        sp.ServerRandom.CopyTo(seed, 0);
        sp.ClientRandom.CopyTo(seed, 32);
        byte[] keyBlock = TlsUtilities.PRF(context, sp.MasterSecret, "key expansion", seed, (2 * keyLength) + (2 * ivLength));
        try
        {
            ReadOnlySpan<byte> kb = keyBlock;
            ReadOnlySpan<byte> clientKey = kb.Slice(0, keyLength);
            ReadOnlySpan<byte> serverKey = kb.Slice(keyLength, keyLength);
            ReadOnlySpan<byte> clientIv = kb.Slice(2 * keyLength, ivLength);
            ReadOnlySpan<byte> serverIv = kb.Slice((2 * keyLength) + ivLength, ivLength);
            ushort version = (ushort)context.ServerVersion.FullVersion;
            return context.IsServer
                ? new DotNetAeadCipher(kind, serverKey, serverIv, clientKey, clientIv, version)
                : new DotNetAeadCipher(kind, clientKey, clientIv, serverKey, serverIv, version);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(keyBlock);
        }
    }

    /// <inheritdoc/>
    public int GetPlaintextLimit(int ciphertextLimit) => ciphertextLimit - TagLength - ExplicitNonceLength;

    /// <inheritdoc/>
    public byte[] EncodePlaintext(long seqNo, byte type, byte[] plaintext, int offset, int len)
    {
        ArgumentNullException.ThrowIfNull(plaintext);
        int explicitLength = ExplicitNonceLength;
        byte[] output = new byte[explicitLength + len + TagLength];
        Span<byte> nonce = stackalloc byte[12];
        Span<byte> aad = stackalloc byte[13];
        WriteAdditionalData(aad, seqNo, type, len);
        ReadOnlySpan<byte> source = plaintext.AsSpan(offset, len);
        Span<byte> ciphertext = output.AsSpan(explicitLength, len);
        Span<byte> tag = output.AsSpan(explicitLength + len, TagLength);
        if (_kind == AeadKind.AesGcm)
        {
            _encryptIv.CopyTo(nonce);
            BinaryPrimitives.WriteInt64BigEndian(nonce.Slice(4), seqNo);
            nonce.Slice(4).CopyTo(output);
            _encryptGcm!.Encrypt(nonce, source, ciphertext, tag, aad);
        }
        else
        {
            ChaChaNonce(nonce, _encryptIv, seqNo);
            _encryptChaCha!.Encrypt(nonce, source, ciphertext, tag, aad);
        }

        return output;
    }

    /// <inheritdoc/>
    public byte[] DecodeCiphertext(long seqNo, byte type, byte[] ciphertext, int offset, int len)
    {
        ArgumentNullException.ThrowIfNull(ciphertext);
        int explicitLength = ExplicitNonceLength;
        if (len < explicitLength + TagLength)
            throw new TlsFatalAlert(AlertDescription.decode_error);
        int plaintextLength = len - explicitLength - TagLength;
        if (type == ContentType.handshake)
        {
            _handshakeBytes += plaintextLength;
            if (_handshakeBytes > MaxEncryptedHandshakeBytes)
                throw new TlsFatalAlert(AlertDescription.unexpected_message);
        }

        byte[] output = new byte[plaintextLength];
        Span<byte> nonce = stackalloc byte[12];
        Span<byte> aad = stackalloc byte[13];
        WriteAdditionalData(aad, seqNo, type, plaintextLength);
        ReadOnlySpan<byte> record = ciphertext.AsSpan(offset, len);
        ReadOnlySpan<byte> body = record.Slice(explicitLength, plaintextLength);
        ReadOnlySpan<byte> tag = record.Slice(explicitLength + plaintextLength, TagLength);
        try
        {
            if (_kind == AeadKind.AesGcm)
            {
                _decryptIv.CopyTo(nonce);
                record.Slice(0, GcmExplicitNonceLength).CopyTo(nonce.Slice(4));
                _decryptGcm!.Decrypt(nonce, body, tag, output, aad);
            }
            else
            {
                ChaChaNonce(nonce, _decryptIv, seqNo);
                _decryptChaCha!.Decrypt(nonce, body, tag, output, aad);
            }
        }
        catch (CryptographicException e)
        {
            // AuthenticationTagMismatchException (a CryptographicException) and any other failure look the same to the peer.
            throw new TlsFatalAlert(AlertDescription.bad_record_mac, e);
        }

        return output;
    }

    private void WriteAdditionalData(Span<byte> aad, long seqNo, byte type, int length)
    {
        BinaryPrimitives.WriteInt64BigEndian(aad, seqNo);
        aad[8] = type;
        BinaryPrimitives.WriteUInt16BigEndian(aad.Slice(9), _version);
        BinaryPrimitives.WriteUInt16BigEndian(aad.Slice(11), (ushort)length);
    }

    private static void ChaChaNonce(Span<byte> nonce, byte[] iv, long seqNo)
    {
        iv.CopyTo(nonce);
        ulong mixed = BinaryPrimitives.ReadUInt64BigEndian(nonce.Slice(4)) ^ (ulong)seqNo;
        BinaryPrimitives.WriteUInt64BigEndian(nonce.Slice(4), mixed);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _encryptGcm?.Dispose();
        _decryptGcm?.Dispose();
        _encryptChaCha?.Dispose();
        _decryptChaCha?.Dispose();
    }
}
