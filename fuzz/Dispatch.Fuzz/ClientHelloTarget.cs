using Dispatch.TlsDispatcher.Tls;

namespace Dispatch.Fuzz;

/// <summary>
/// The dispatcher's ClientHello parser on the first bytes of a connection, as TlsTerminationFrontend calls it after
/// every read. Documented: it never throws; Incomplete asks for more bytes than it has (and never more than the hello
/// is long); Ok reports where the hello ends. Every proper prefix of an accepted hello must be Incomplete.
/// </summary>
internal sealed class ClientHelloTarget : IFuzzTarget
{
    public string Name => "clienthello";

    public string Description => "ClientHelloParser.TryParse on a connection's first bytes (TLS port)";

    public void Run(ReadOnlySpan<byte> data)
    {
        var result = ClientHelloParser.TryParse(data, out var info, out var needed, out var error);
        switch (result)
        {
            case ClientHelloResult.Incomplete:
                if (needed <= data.Length)
                    throw new FuzzFindingException($"Incomplete with {data.Length} bytes asks for only {needed}");
                break;
            case ClientHelloResult.Ok:
                if (info is null || info.Length <= 0 || info.Length > data.Length)
                    throw new FuzzFindingException($"Ok with a hello length of {info?.Length} in {data.Length} bytes");
                CheckPrefixes(data[..info.Length], info);
                break;
            case ClientHelloResult.Malformed:
                if (string.IsNullOrEmpty(error))
                    throw new FuzzFindingException("Malformed without a reason");
                break;
            case ClientHelloResult.NotTls:
                break;
            default:
                throw new FuzzFindingException($"unknown result {result}");
        }
    }

    /// <summary>The hello alone parses the same; shorter reads of it are Incomplete and never ask past its end.</summary>
    private static void CheckPrefixes(ReadOnlySpan<byte> hello, ClientHelloInfo info)
    {
        if (ClientHelloParser.TryParse(hello, out var again) != ClientHelloResult.Ok || again!.ServerName != info.ServerName)
            throw new FuzzFindingException("the hello without what follows it does not parse the same");
        foreach (var cut in new[] { 0, 1, 5, 9, hello.Length / 2, hello.Length - 1 })
        {
            if (cut < 0 || cut >= hello.Length)
                continue;
            var r = ClientHelloParser.TryParse(hello[..cut], out _, out var needed, out var error);
            if (r != ClientHelloResult.Incomplete)
                throw new FuzzFindingException($"the first {cut} of {hello.Length} bytes of an accepted hello are {r} ({error})");
            if (needed <= cut || needed > hello.Length)
                throw new FuzzFindingException($"the first {cut} of {hello.Length} bytes of an accepted hello ask for {needed} bytes");
        }
    }
}
