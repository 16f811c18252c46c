"""TLS client set-up shared by the bench's Python tools (flood.py, leaks.py, tool.py): client contexts and the
first flight of a real client. Standard library only; import it from a script in bench/ (its folder is on
sys.path when the script runs)."""

import ssl


def context(cafile=None, minimum=None, maximum=None, alpn=None, tickets=True):
    """A client context. With `cafile`: the server's certificate and name are verified against that CA (as a
    real client does); without: nothing is verified (a load tool that only needs the handshake). `minimum` and
    `maximum` pin the TLS versions (ssl.TLSVersion); `alpn` offers those protocols; tickets=False asks for no
    session ticket (every connection a full handshake)."""
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if not tickets:
        ctx.options |= ssl.OP_NO_TICKET
    return ctx


def client_hello(ctx, host):
    """The first flight (a ClientHello record) that `ctx` sends to `host`, made through memory BIOs: nothing
    goes on the network, so a tool can send it whole, cut short or corrupted."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
