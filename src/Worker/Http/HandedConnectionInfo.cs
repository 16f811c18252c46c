using System.Net;
using Dispatch.Wire;
using Dispatch.Wire.Tls;

namespace Dispatch.Worker.Http;

/// <summary>What the dispatcher tells the worker about a connection it hands over.</summary>
/// <param name="ConnectionId">The dispatcher's id of the connection (also used as Kestrel's connection id).</param>
/// <param name="Client">The client's address when the socket does not show it (TLS proxied over a socketpair,
/// PROXY protocol); <see langword="null"/> to take it from the socket.</param>
/// <param name="Local">The address the client connected to, when the socket does not show it.</param>
/// <param name="Sni">The TLS server name, if any.</param>
/// <param name="TlsProtocol">The negotiated TLS version, if the dispatcher terminated TLS.</param>
/// <param name="TlsCipher">The negotiated cipher suite, if the dispatcher terminated TLS.</param>
/// <param name="Protocol">Which HTTP version to speak on the connection.</param>
/// <param name="Session">A TLS session handed over after its handshake (<see cref="ConnectionMode.HandedTls"/>): the
/// worker runs the record layer (<see cref="Tls.TlsRecordLayer"/>), which clears the secrets once it has its keys.
/// <see cref="TlsProtocol"/> and <see cref="TlsCipher"/> are set as for a connection whose TLS the dispatcher ends.</param>
/// <param name="TlsPlaintext">With <paramref name="Session"/>: application data the dispatcher already decrypted (the
/// first request head of an identity vhost), read before anything the record layer decrypts.</param>
/// <param name="OverSocketPair">The descriptor is not the client's TCP socket but a socketpair end carrying the
/// plaintext of TLS the dispatcher ends itself (<see cref="ConnectionMode.TerminatedTls"/>, the <c>openssl</c> engine):
/// its <see cref="System.Net.Sockets.Socket"/> is made by asking the kernel what it is, never from
/// <paramref name="Client"/> and <paramref name="Local"/>, which are the TCP connection's.</param>
public sealed record HandedConnectionInfo(
    long ConnectionId,
    IPEndPoint? Client,
    IPEndPoint? Local,
    string? Sni,
    string? TlsProtocol,
    string? TlsCipher,
    HandedProtocol Protocol,
    TlsSessionState? Session = null,
    ReadOnlyMemory<byte> TlsPlaintext = default,
    bool OverSocketPair = false)
{
    /// <summary>What the dispatcher's hand-off message says of its connection.</summary>
    public static HandedConnectionInfo From(Connection meta)
    {
        ArgumentNullException.ThrowIfNull(meta);
        return new HandedConnectionInfo(
            (long)meta.ConnectionId,
            IPEndPoint.TryParse(meta.Client, out var client) ? client : null,
            IPEndPoint.TryParse(meta.Local, out var local) ? local : null,
            meta.Sni,
            meta.TlsProtocol,
            meta.TlsCipher,
            meta.Mode == ConnectionMode.PassthroughTls ? HandedProtocol.Tls : meta.Protocol == AppProtocol.Http2 ? HandedProtocol.Http2 : HandedProtocol.Http1,
            meta.Mode == ConnectionMode.HandedTls ? meta.Session : null,
            meta.Plaintext,
            OverSocketPair: meta.Mode == ConnectionMode.TerminatedTls);
    }
}

/// <summary>
/// Connection feature carrying the <see cref="HandedConnectionInfo"/>. Set on every connection's
/// <c>ConnectionContext.Features</c>; Kestrel's request feature collection falls back to the connection's, so
/// <c>HttpContext.Features.Get&lt;IHandedConnectionFeature&gt;()</c> works in request handling (HTTP/1.1 and HTTP/2).
/// </summary>
public interface IHandedConnectionFeature
{
    /// <summary>The dispatcher's metadata for this connection.</summary>
    HandedConnectionInfo Info { get; }
}
