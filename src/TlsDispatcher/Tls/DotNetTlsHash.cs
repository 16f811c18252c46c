using System.Security.Cryptography;
using Org.BouncyCastle.Tls.Crypto;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>A transcript or signature hash computed by .NET's <see cref="IncrementalHash"/>.</summary>
public sealed class DotNetTlsHash : TlsHash, IDisposable
{
    private readonly IncrementalHash _hash;

    /// <summary>A fresh hash.</summary>
    public DotNetTlsHash(HashAlgorithmName name)
        : this(IncrementalHash.CreateHash(name))
    {
    }

    private DotNetTlsHash(IncrementalHash hash) => _hash = hash;

    /// <inheritdoc/>
    public void Update(byte[] input, int inOff, int length) => _hash.AppendData(input, inOff, length);

    /// <inheritdoc/>
    public void Update(ReadOnlySpan<byte> input) => _hash.AppendData(input);

    /// <inheritdoc/>
    public byte[] CalculateHash() => _hash.GetHashAndReset();

    /// <inheritdoc/>
    public TlsHash CloneHash() => new DotNetTlsHash(_hash.Clone());

    /// <inheritdoc/>
    public void Reset() => _hash.GetHashAndReset();

    /// <inheritdoc/>
    public void Dispose() => _hash.Dispose();
}
