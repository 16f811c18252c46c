using System.Runtime.CompilerServices;
using Org.BouncyCastle.Tls;
using Org.BouncyCastle.Tls.Crypto;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// BouncyCastle's non-blocking server protocol with what TLS 1.3 resumption needs and BouncyCastle 2.7 lacks: the
/// resumption_master_secret (RFC 8446 7.1), computed when the client's Finished has been verified, and a way to send
/// a post-handshake handshake message (NewSessionTicket) through BouncyCastle's own record layer, so the sequence
/// numbers stay BouncyCastle's (and the hand-off's).
/// </summary>
internal sealed class DispatchServerProtocol : TlsServerProtocol
{
    /// <summary>Derive-Secret(master_secret, "res master", ClientHello..client Finished), once the handshake is done (TLS 1.3).</summary>
    public DotNetTlsSecret? ResumptionMasterSecret { get; private set; }

    /// <summary>Writes one handshake message (header included) as a record of its own.</summary>
    public void SendHandshakeMessage(byte[] message)
    {
        ArgumentNullException.ThrowIfNull(message);
        SafeWriteRecord(ContentType.handshake, message, 0, message.Length);
    }

    // BouncyCastle's transcript: internal to TlsProtocol (AOT-safe access).
    [UnsafeAccessor(UnsafeAccessorKind.Field, Name = "m_handshakeHash")]
    private static extern ref TlsHandshakeHash HandshakeHash(TlsProtocol protocol);

    protected override void Receive13ClientFinished(MemoryStream buf)
    {
        // The whole message (header and verify_data): BouncyCastle verifies it against the transcript without it and
        // never adds it, but the resumption master secret's transcript ends with it.
        byte[] finished = buf.ToArray();
        base.Receive13ClientFinished(buf);
        SecurityParameters parameters = Context.SecurityParameters;
        if (parameters.MasterSecret is not DotNetTlsSecret master)
            return;
        TlsHash transcript = HandshakeHash(this).ForkPrfHash();
        transcript.Update(finished, 0, finished.Length);
        ResumptionMasterSecret = (DotNetTlsSecret)master.DeriveUsingPrf(parameters.PrfAlgorithm, "res master", transcript.CalculateHash(), parameters.PrfHashLength);
    }
}
