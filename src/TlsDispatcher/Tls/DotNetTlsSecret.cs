using System.Security.Cryptography;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;
using Org.BouncyCastle.Tls.Crypto.Impl;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// A TLS secret owned by <see cref="DotNetTlsCrypto"/>: every derivation (TLS 1.2 PRF, TLS 1.3 HKDF-Extract and
/// HKDF-Expand-Label: <see cref="OpenSslHmac"/>; Finished HMACs: .NET) yields another <see cref="DotNetTlsSecret"/>, so the
/// session's traffic secrets and master secret can be copied out for the hand-off (<see cref="Export"/>) without
/// BouncyCastle's <see cref="TlsSecret.Extract"/>, which destroys the secret.
/// </summary>
public sealed class DotNetTlsSecret : AbstractTlsSecret
{
    private static readonly byte[] ExtBinder = "ext binder"u8.ToArray();
    private static readonly byte[] ResBinder = "res binder"u8.ToArray();
    private readonly DotNetTlsCrypto _crypto;

    internal DotNetTlsSecret(DotNetTlsCrypto crypto, byte[] data, bool resumption = false)
        : base(data)
    {
        _crypto = crypto;
        IsResumption = resumption;
    }

    /// <summary>
    /// True for a TLS 1.3 resumption PSK and the early secret derived from it: BouncyCastle 2.7's server only knows
    /// external PSKs and always asks for the "ext binder" key; such a secret derives the "res binder" key instead
    /// (RFC 8446 7.1), which is what a client resuming from a NewSessionTicket computes.
    /// </summary>
    public bool IsResumption { get; }

    /// <inheritdoc/>
    protected override AbstractTlsCrypto Crypto => _crypto;

    /// <summary>A copy of the secret's bytes; the secret stays alive.</summary>
    public byte[] Export()
    {
        lock (this)
        {
            CheckAlive();
            return (byte[])m_data.Clone();
        }
    }

    /// <inheritdoc/>
    public override TlsSecret DeriveUsingPrf(int prfAlgorithm, string label, byte[] seed, int length)
    {
        ArgumentNullException.ThrowIfNull(label);
        ArgumentNullException.ThrowIfNull(seed);
        return DeriveUsingPrf(prfAlgorithm, label.AsSpan(), seed.AsSpan(), length);
    }

    /// <inheritdoc/>
    public override TlsSecret DeriveUsingPrf(int prfAlgorithm, ReadOnlySpan<char> label, ReadOnlySpan<byte> seed, int length)
    {
        switch (prfAlgorithm)
        {
            case PrfAlgorithm.tls13_hkdf_sha256:
                return TlsCryptoUtilities.HkdfExpandLabel(this, CryptoHashAlgorithm.sha256, label, seed, length);
            case PrfAlgorithm.tls13_hkdf_sha384:
                return TlsCryptoUtilities.HkdfExpandLabel(this, CryptoHashAlgorithm.sha384, label, seed, length);
            case PrfAlgorithm.tls_prf_sha256:
            case PrfAlgorithm.tls_prf_sha384:
                break;
            default:
                throw new TlsFatalAlert(AlertDescription.internal_error);
        }

        // TLS 1.2 PRF (RFC 5246 5): P_hash(secret, label + seed).
        HashAlgorithmName hash = prfAlgorithm == PrfAlgorithm.tls_prf_sha384 ? HashAlgorithmName.SHA384 : HashAlgorithmName.SHA256;
        byte[] labelSeed = new byte[label.Length + seed.Length];
        for (int i = 0; i < label.Length; i++)
            labelSeed[i] = (byte)label[i];
        seed.CopyTo(labelSeed.AsSpan(label.Length));
        byte[] output = new byte[length];
        lock (this)
        {
            CheckAlive();
            OpenSslHmac.Prf(hash, m_data, labelSeed, output);
        }

        return new DotNetTlsSecret(_crypto, output);
    }

    /// <inheritdoc/>
    public override TlsSecret HkdfExpand(int cryptoHashAlgorithm, byte[] info, int length)
    {
        ArgumentNullException.ThrowIfNull(info);
        return HkdfExpand(cryptoHashAlgorithm, info.AsSpan(), length);
    }

    /// <inheritdoc/>
    public override TlsSecret HkdfExpand(int cryptoHashAlgorithm, ReadOnlySpan<byte> info, int length)
    {
        byte[] output = new byte[length];
        if (length == 0)
            return new DotNetTlsSecret(_crypto, output);
        byte[]? swapped = null;
        if (IsResumption)
            swapped = SwapBinderLabel(info);
        lock (this)
        {
            CheckAlive();
            OpenSslHmac.Expand(DotNetTlsCrypto.HashName(cryptoHashAlgorithm), m_data, swapped ?? info, output);
        }

        return new DotNetTlsSecret(_crypto, output);
    }

    /// <inheritdoc/>
    public override TlsSecret HkdfExtract(int cryptoHashAlgorithm, TlsSecret ikm)
    {
        ArgumentNullException.ThrowIfNull(ikm);
        byte[] input = ikm switch
        {
            DotNetTlsSecret own => own.Export(),
            AbstractTlsSecret other => CopyData(other),
            _ => throw new TlsFatalAlert(AlertDescription.internal_error),
        };
        try
        {
            HashAlgorithmName hash = DotNetTlsCrypto.HashName(cryptoHashAlgorithm);
            byte[] prk;
            lock (this)
            {
                CheckAlive();
                prk = OpenSslHmac.Extract(hash, m_data, input);
            }

            // The early secret extracted from a resumption PSK (salt: zeros, this; ikm: the PSK) derives "res binder".
            return new DotNetTlsSecret(_crypto, prk, ikm is DotNetTlsSecret { IsResumption: true });
        }
        finally
        {
            CryptographicOperations.ZeroMemory(input);
        }
    }

    /// <summary>In an HkdfLabel (u16 length, u8 label length, "tls13 " + label, context): "ext binder" → "res binder".</summary>
    private static byte[]? SwapBinderLabel(ReadOnlySpan<byte> info)
    {
        const int LabelStart = 3 + 6; // u16 length, u8 label length, "tls13 "
        if (info.Length < LabelStart + ExtBinder.Length || info[2] != 6 + ExtBinder.Length
            || !info.Slice(LabelStart, ExtBinder.Length).SequenceEqual(ExtBinder))
            return null;
        byte[] copy = info.ToArray();
        ResBinder.CopyTo(copy.AsSpan(LabelStart));
        return copy;
    }
}
