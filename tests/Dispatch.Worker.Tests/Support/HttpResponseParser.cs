using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace Dispatch.Worker.Tests.Support;

/// <summary>Parses one HTTP/1.1 response with a Content-Length off the front of a buffer.</summary>
internal static class HttpResponseParser
{
    public static bool TryParse(List<byte> buffer, out RawResponse response)
    {
        response = null!;
        var bytes = CollectionsMarshal.AsSpan(buffer);
        var headEnd = bytes.IndexOf("\r\n\r\n"u8);
        if (headEnd < 0)
        {
            return false;
        }

        var lines = Encoding.ASCII.GetString(bytes[..headEnd]).Split("\r\n");
        var status = int.Parse(lines[0].Split(' ')[1], CultureInfo.InvariantCulture);
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var line in lines.Skip(1))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
        }

        var length = headers.TryGetValue("Content-Length", out var text) ? int.Parse(text, CultureInfo.InvariantCulture) : 0;
        if (bytes.Length < headEnd + 4 + length)
        {
            return false;
        }

        response = new RawResponse(lines[0], status, headers, bytes[(headEnd + 4)..(headEnd + 4 + length)].ToArray());
        buffer.RemoveRange(0, headEnd + 4 + length);
        return true;
    }

    /// <summary>Reads one response from a stream (a TLS library's plaintext stream), keeping what follows in <paramref name="buffer"/>.</summary>
    public static async Task<RawResponse> ReadAsync(Stream stream, List<byte> buffer)
    {
        var chunk = new byte[65536];
        while (true)
        {
            if (TryParse(buffer, out var response))
            {
                return response;
            }

            var n = await stream.ReadAsync(chunk);
            if (n <= 0)
            {
                throw new IOException("the stream ended inside a response");
            }

            buffer.AddRange(chunk.AsSpan(0, n));
        }
    }
}
