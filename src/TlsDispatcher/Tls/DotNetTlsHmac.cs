using System.Security.Cryptography;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>An HMAC computed by .NET (Finished messages, PSK binders).</summary>
public sealed class DotNetTlsHmac : TlsHmac, IDisposable
{
    private readonly HashAlgorithmName _name;
    private IncrementalHash? _hmac;

    /// <summary>An HMAC over <paramref name="name"/>; call <see cref="SetKey(ReadOnlySpan{byte})"/> first.</summary>
    public DotNetTlsHmac(HashAlgorithmName name)
    {
        _name = name;
        MacLength = name == HashAlgorithmName.SHA256 ? 32 : name == HashAlgorithmName.SHA384 ? 48 : 64;
        InternalBlockSize = name == HashAlgorithmName.SHA256 ? 64 : 128;
    }

    /// <inheritdoc/>
    public int InternalBlockSize { get; }

    /// <inheritdoc/>
    public int MacLength { get; }

    /// <inheritdoc/>
    public void SetKey(byte[] key, int keyOff, int keyLen) => SetKey(key.AsSpan(keyOff, keyLen));

    /// <inheritdoc/>
    public void SetKey(ReadOnlySpan<byte> key)
    {
        _hmac?.Dispose();
        _hmac = IncrementalHash.CreateHMAC(_name, key);
    }

    /// <inheritdoc/>
    public void Update(byte[] input, int inOff, int length) => Hmac.AppendData(input, inOff, length);

    /// <inheritdoc/>
    public void Update(ReadOnlySpan<byte> input) => Hmac.AppendData(input);

    /// <inheritdoc/>
    public byte[] CalculateMac() => Hmac.GetHashAndReset();

    /// <inheritdoc/>
    public void CalculateMac(byte[] output, int outOff) => Hmac.GetHashAndReset(output.AsSpan(outOff, MacLength));

    /// <inheritdoc/>
    public void Reset() => _hmac?.GetHashAndReset();

    /// <inheritdoc/>
    public void Dispose() => _hmac?.Dispose();

    private IncrementalHash Hmac => _hmac ?? throw new TlsFatalAlert(AlertDescription.internal_error, "HMAC used before its key was set");
}
