using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;
using Org.BouncyCastle.Tls.Crypto.Impl;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// BouncyCastle's AEAD record cipher (TLS 1.3 and 1.2 nonces and additional data) over .NET's AEADs
/// (<see cref="DotNetAeadCipherImpl"/>), which also records what the hand-off needs: the sequence number of the next
/// record in each direction, and (TLS 1.2) the write keys and IVs.
/// </summary>
public sealed class RecordingAeadCipher : TlsAeadCipher, IDisposable
{
    private readonly DotNetAeadCipherImpl _encrypt;
    private readonly DotNetAeadCipherImpl _decrypt;

    private RecordingAeadCipher(TlsCryptoParameters parameters, DotNetAeadCipherImpl encrypt, DotNetAeadCipherImpl decrypt, int keySize, int aeadType)
        : base(parameters, encrypt, decrypt, keySize, 16, aeadType)
    {
        _encrypt = encrypt;
        _decrypt = decrypt;
    }

    /// <summary>The sequence number of the next record this cipher decrypts (from the client).</summary>
    public ulong NextReadSequence { get; private set; }

    /// <summary>The sequence number of the next record this cipher encrypts (to the client).</summary>
    public ulong NextWriteSequence { get; private set; }

    /// <summary>TLS 1.2: our (server) write key.</summary>
    internal byte[] WriteKey => _encrypt.Key;

    /// <summary>TLS 1.2: the client's write key.</summary>
    internal byte[] ReadKey => _decrypt.Key;

    /// <summary>TLS 1.2: server_write_IV (4 bytes of GCM salt, or the 12-byte ChaCha20 IV).</summary>
    internal byte[] WriteIv => (byte[])m_encryptNonce.Clone();

    /// <summary>TLS 1.2: client_write_IV.</summary>
    internal byte[] ReadIv => (byte[])m_decryptNonce.Clone();

    internal static RecordingAeadCipher Create(TlsCryptoParameters parameters, AeadKind kind, int keySize)
    {
        var encrypt = new DotNetAeadCipherImpl(kind, encrypt: true);
        var decrypt = new DotNetAeadCipherImpl(kind, encrypt: false);
        return new RecordingAeadCipher(parameters, encrypt, decrypt, keySize, kind == AeadKind.AesGcm ? AEAD_GCM : AEAD_CHACHA20_POLY1305);
    }

    /// <inheritdoc/>
    public override TlsEncodeResult EncodePlaintext(long seqNo, short contentType, ProtocolVersion recordVersion, int headerAllocation, byte[] plaintext, int plaintextOffset, int plaintextLength)
    {
        TlsEncodeResult result = base.EncodePlaintext(seqNo, contentType, recordVersion, headerAllocation, plaintext, plaintextOffset, plaintextLength);
        NextWriteSequence = (ulong)seqNo + 1;
        return result;
    }

    /// <inheritdoc/>
    public override TlsEncodeResult EncodePlaintext(long seqNo, short contentType, ProtocolVersion recordVersion, int headerAllocation, ReadOnlySpan<byte> plaintext)
    {
        TlsEncodeResult result = base.EncodePlaintext(seqNo, contentType, recordVersion, headerAllocation, plaintext);
        NextWriteSequence = (ulong)seqNo + 1;
        return result;
    }

    /// <inheritdoc/>
    public override TlsDecodeResult DecodeCiphertext(long seqNo, short recordType, ProtocolVersion recordVersion, byte[] ciphertext, int ciphertextOffset, int ciphertextLength)
    {
        TlsDecodeResult result = base.DecodeCiphertext(seqNo, recordType, recordVersion, ciphertext, ciphertextOffset, ciphertextLength);
        NextReadSequence = (ulong)seqNo + 1;
        return result;
    }

    /// <inheritdoc/>
    public override void RekeyDecoder()
    {
        base.RekeyDecoder();
        NextReadSequence = 0;
    }

    /// <inheritdoc/>
    public override void RekeyEncoder()
    {
        base.RekeyEncoder();
        NextWriteSequence = 0;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _encrypt.Dispose();
        _decrypt.Dispose();
    }
}
