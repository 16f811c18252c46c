namespace Dispatch.Worker.Http;

/// <summary>The HTTP version a handed connection speaks (the dispatcher decides: ALPN, or the h2 preface).</summary>
public enum HandedProtocol
{
    /// <summary>HTTP/1.x.</summary>
    Http1,

    /// <summary>HTTP/2 (prior knowledge when cleartext).</summary>
    Http2,

    /// <summary>TLS still to be terminated here (a passthrough vhost): the tenant's own certificate, ALPN h2 or http/1.1.</summary>
    Tls,
}
