using System.Security.Cryptography;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto.Impl;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// One direction of a record cipher: .NET's <see cref="AesGcm"/> or <see cref="ChaCha20Poly1305"/> under
/// BouncyCastle's <see cref="TlsAeadCipher"/> (which builds the nonces and additional data). It remembers its key
/// so the hand-off can export it (TLS 1.2).
/// </summary>
public sealed class DotNetAeadCipherImpl : TlsAeadCipherImpl, IDisposable
{
    private const int TagLength = 16;
    private readonly AeadKind _kind;
    private readonly bool _encrypt;
    private AesGcm? _gcm;
    private ChaCha20Poly1305? _chacha;
    private byte[] _nonce = [];

    /// <summary>A cipher for one direction.</summary>
    public DotNetAeadCipherImpl(AeadKind kind, bool encrypt)
    {
        _kind = kind;
        _encrypt = encrypt;
    }

    /// <summary>The current key (a copy is taken at <see cref="SetKey(ReadOnlySpan{byte})"/>).</summary>
    internal byte[] Key { get; private set; } = [];

    /// <inheritdoc/>
    public void SetKey(byte[] key, int keyOff, int keyLen) => SetKey(key.AsSpan(keyOff, keyLen));

    /// <inheritdoc/>
    public void SetKey(ReadOnlySpan<byte> key)
    {
        DisposeCiphers();
        CryptographicOperations.ZeroMemory(Key);
        Key = key.ToArray();
        if (_kind == AeadKind.AesGcm)
            _gcm = new AesGcm(key, TagLength);
        else
            _chacha = new ChaCha20Poly1305(key);
    }

    /// <inheritdoc/>
    public void Init(byte[] nonce, int macSize, byte[] additionalData)
    {
        ArgumentNullException.ThrowIfNull(nonce);
        if (macSize != TagLength || nonce.Length != 12)
            throw new TlsFatalAlert(AlertDescription.internal_error);
        _nonce = nonce;
    }

    /// <inheritdoc/>
    public int GetOutputSize(int inputLength) => _encrypt ? inputLength + TagLength : inputLength - TagLength;

    /// <inheritdoc/>
    public int DoFinal(byte[] input, int inputOffset, int inputLength, byte[] output, int outputOffset)
        => DoFinal([], input, inputOffset, inputLength, output, outputOffset);

    /// <inheritdoc/>
    public int DoFinal(byte[] additionalData, byte[] input, int inputOffset, int inputLength, byte[] output, int outputOffset)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(output);
        ReadOnlySpan<byte> source = input.AsSpan(inputOffset, inputLength);
        if (_encrypt)
        {
            Span<byte> ciphertext = output.AsSpan(outputOffset, inputLength);
            Span<byte> tag = output.AsSpan(outputOffset + inputLength, TagLength);
            if (source.Overlaps(tag) || (source.Overlaps(ciphertext, out int shift) && shift != 0))
                source = source.ToArray();
            if (_gcm is not null)
                _gcm.Encrypt(_nonce, source, ciphertext, tag, additionalData);
            else
                Chacha.Encrypt(_nonce, source, ciphertext, tag, additionalData);
            return inputLength + TagLength;
        }

        int length = inputLength - TagLength;
        if (length < 0)
            throw new TlsFatalAlert(AlertDescription.bad_record_mac);
        ReadOnlySpan<byte> body = source[..length];
        ReadOnlySpan<byte> receivedTag = source[length..];
        Span<byte> plaintext = output.AsSpan(outputOffset, length);
        if (body.Overlaps(plaintext, out int offset) && offset != 0)
            body = body.ToArray();
        try
        {
            if (_gcm is not null)
                _gcm.Decrypt(_nonce, body, receivedTag, plaintext, additionalData);
            else
                Chacha.Decrypt(_nonce, body, receivedTag, plaintext, additionalData);
        }
        catch (AuthenticationTagMismatchException)
        {
            throw new TlsFatalAlert(AlertDescription.bad_record_mac);
        }

        return length;
    }

    /// <inheritdoc/>
    public void Reset()
    {
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        DisposeCiphers();
        CryptographicOperations.ZeroMemory(Key);
    }

    private ChaCha20Poly1305 Chacha => _chacha ?? throw new TlsFatalAlert(AlertDescription.internal_error);

    private void DisposeCiphers()
    {
        _gcm?.Dispose();
        _gcm = null;
        _chacha?.Dispose();
        _chacha = null;
    }
}
