using Dispatch.TlsDispatcher.Net;

namespace Dispatch.Fuzz;

/// <summary>
/// The PROXY protocol reader (v1 and v2), as Frontend.ReadProxyHeaderAsync calls it: after every read of at most
/// <see cref="ProxyProtocol.MaxV2"/> bytes, on all the bytes so far. Documented: Incomplete, Ok (the header's length,
/// at most 107 bytes for v1, and the announced source or none) or Invalid with a reason; never an exception.
/// </summary>
internal sealed class ProxyProtocolTarget : IFuzzTarget
{
    public string Name => "proxyprotocol";

    public string Description => "ProxyProtocol.Parse on a trusted balancer's first bytes (v1 and v2)";

    public void Run(ReadOnlySpan<byte> data)
    {
        data = data[..Math.Min(data.Length, ProxyProtocol.MaxV2)];
        var status = ProxyProtocol.Parse(data, out var source, out var consumed, out var error);
        switch (status)
        {
            case ProxyHeaderStatus.Incomplete:
                break;
            case ProxyHeaderStatus.Ok:
                if (consumed <= 0 || consumed > data.Length)
                    throw new FuzzFindingException($"Ok with a header of {consumed} bytes in {data.Length}");
                if (data[0] == (byte)'P' && consumed > ProxyProtocol.MaxV1)
                    throw new FuzzFindingException($"Ok with a v1 header of {consumed} bytes, more than {ProxyProtocol.MaxV1}");
                if (source is not null && source.Port is < 0 or > 65535)
                    throw new FuzzFindingException($"Ok with the source {source}");

                // The header alone parses the same: what follows it is the client's, never part of the header.
                var again = ProxyProtocol.Parse(data[..consumed], out var source2, out var consumed2, out _);
                if (again != ProxyHeaderStatus.Ok || consumed2 != consumed || !Equals(source, source2))
                    throw new FuzzFindingException($"the header alone is {again} ({consumed2} bytes, {source2}), with what follows Ok ({consumed} bytes, {source})");
                break;
            case ProxyHeaderStatus.Invalid:
                if (string.IsNullOrEmpty(error))
                    throw new FuzzFindingException("Invalid without a reason");
                break;
            default:
                throw new FuzzFindingException($"unknown status {status}");
        }
    }
}
