using Dispatch.TlsDispatcher.Http;

namespace Dispatch.Fuzz;

/// <summary>
/// The dispatcher's HTTP/1.x request-head reader, as PlainHttpFrontend calls it: after every read, on all the bytes so
/// far, carrying <c>scanned</c>. The head is parsed as it arrives in reads of 1..16 bytes and in one
/// piece, and both must agree. Documented: Incomplete, Complete (a routable lower-case host, the head's
/// length, the target inside the request line) or Invalid with a status and a reason; never an exception.
/// The input is the connection's bytes as they are (the read sizes derive from its length).
/// </summary>
internal sealed class RequestHeadTarget : IFuzzTarget
{
    public string Name => "requesthead";

    public string Description => "RequestHead.Parse on a plain-HTTP connection's bytes, read in pieces and whole";

    public void Run(ReadOnlySpan<byte> data)
    {
        // No early return for an empty input: afl-fuzz's first run may be an empty one, and it must reach the parser.
        var split = data.Length * 31;
        Span<char> wholeHost = stackalloc char[256];
        var scanned = 0;
        var whole = RequestHead.Parse(data, ref scanned, wholeHost, out var wholeLength, out var wholeHead, out var wholeTarget, out var wholeStatus, out var wholeError);
        Check(data, whole, wholeHost[..wholeLength], wholeHead, wholeTarget, wholeStatus, wholeError);

        // Read in pieces of 1..16 bytes, re-parsing all so far after each, as production does.
        Span<char> host = stackalloc char[256];
        scanned = 0;
        var filled = 0;
        var step = 1 + (split & 0x0F);
        var status = HeadStatus.Incomplete;
        int hostLength = 0, headLength = 0, errorStatus = 0;
        string? error = null;
        while (filled < data.Length && status == HeadStatus.Incomplete)
        {
            filled = Math.Min(data.Length, filled + step);
            status = RequestHead.Parse(data[..filled], ref scanned, host, out hostLength, out headLength, out _, out errorStatus, out error);
            step = 1 + ((step * 7 + split) & 0x0F);
        }

        if (status != whole || (status == HeadStatus.Complete && (!host[..hostLength].SequenceEqual(wholeHost[..wholeLength]) || headLength != wholeHead))
            || (status == HeadStatus.Invalid && errorStatus != wholeStatus))
        {
            throw new FuzzFindingException(
                $"read in pieces: {status} ({error}, host '{host[..hostLength].ToString()}', head {headLength}); whole: {whole} ({wholeError}, host '{wholeHost[..wholeLength].ToString()}', head {wholeHead})");
        }
    }

    private static void Check(ReadOnlySpan<byte> data, HeadStatus status, ReadOnlySpan<char> host, int headLength, Range target, int errorStatus, string? error)
    {
        switch (status)
        {
            case HeadStatus.Incomplete:
                break;
            case HeadStatus.Complete:
                if (headLength < 4 || headLength > data.Length || !data[(headLength - 4)..headLength].SequenceEqual("\r\n\r\n"u8))
                    throw new FuzzFindingException($"Complete with a head length of {headLength} in {data.Length} bytes");
                var (offset, length) = target.GetOffsetAndLength(headLength);
                if (length == 0 || offset + length > headLength || data[..offset].IndexOf("\r\n"u8) >= 0)
                    throw new FuzzFindingException($"Complete with the target at {offset}+{length}, outside the request line");
                if (host.Length is 0 or > 253)
                    throw new FuzzFindingException($"Complete with a host of {host.Length} characters");
                foreach (var c in host)
                {
                    if (!(c is >= 'a' and <= 'z' or >= '0' and <= '9' or '-' or '.' or '_' or '[' or ']' or ':'))
                        throw new FuzzFindingException($"Complete with the host '{host.ToString()}'");
                }

                break;
            case HeadStatus.Invalid:
                if (string.IsNullOrEmpty(error) || errorStatus is not (400 or 505))
                    throw new FuzzFindingException($"Invalid with status {errorStatus} and reason '{error}'");
                break;
            default:
                throw new FuzzFindingException($"unknown status {status}");
        }
    }
}
