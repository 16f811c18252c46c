using System.Buffers.Binary;

namespace Dispatch.Worker.FastCgi;

/// <summary>
/// The FastCGI record header and its rules (the specification, section 3.3):
/// <code>
/// byte 0   version            always 1
/// byte 1   type               FastCgiRecordType
/// byte 2-3 requestId          big-endian; 0 for management records
/// byte 4-5 contentLength      big-endian, 0..65535
/// byte 6   paddingLength      0..255
/// byte 7   reserved
/// </code>
/// followed by contentLength bytes of content and paddingLength bytes of padding.
/// </summary>
internal static class FastCgiRecord
{
    public const int HeaderSize = 8;
    public const byte Version = 1;
    public const int MaxContentLength = 65535;
    public const int MaxPaddingLength = 255;

    /// <summary>The only request id this client uses: one request per connection at a time.</summary>
    public const ushort RequestId = 1;

    /// <summary>FCGI_RESPONDER.</summary>
    public const ushort RoleResponder = 1;

    /// <summary>FCGI_KEEP_CONN: the application keeps the connection open after the request.</summary>
    public const byte FlagKeepConnection = 1;

    /// <summary>Size of an FCGI_END_REQUEST body.</summary>
    public const int EndRequestBodySize = 8;

    /// <summary>Writes a record header for <paramref name="contentLength"/> bytes of content, no padding.</summary>
    public static void WriteHeader(Span<byte> destination, FastCgiRecordType type, int contentLength)
    {
        if ((uint)contentLength > MaxContentLength)
        {
            throw new ArgumentOutOfRangeException(nameof(contentLength));
        }

        destination[0] = Version;
        destination[1] = (byte)type;
        BinaryPrimitives.WriteUInt16BigEndian(destination[2..], RequestId);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], (ushort)contentLength);
        destination[6] = 0;
        destination[7] = 0;
    }

    /// <summary>
    /// Checks a received header: version 1, a type a responder may send (STDOUT, STDERR, END_REQUEST), this client's
    /// request id. Anything else is a <see cref="FastCgiProtocolException"/>.
    /// </summary>
    public static (FastCgiRecordType Type, int ContentLength, int PaddingLength) ParseHeader(ReadOnlySpan<byte> header)
    {
        if (header.Length < HeaderSize)
        {
            throw new ArgumentException("A record header is 8 bytes.", nameof(header));
        }

        if (header[0] != Version)
        {
            throw new FastCgiProtocolException($"record version {header[0]}, not 1");
        }

        var type = (FastCgiRecordType)header[1];
        var requestId = BinaryPrimitives.ReadUInt16BigEndian(header[2..]);
        var contentLength = BinaryPrimitives.ReadUInt16BigEndian(header[4..]);
        var paddingLength = header[6];
        if (type is not (FastCgiRecordType.Stdout or FastCgiRecordType.Stderr or FastCgiRecordType.EndRequest))
        {
            throw new FastCgiProtocolException($"unexpected record type {header[1]} (request id {requestId})");
        }

        if (requestId != RequestId)
        {
            throw new FastCgiProtocolException($"record for request id {requestId}, not {RequestId}");
        }

        if (type == FastCgiRecordType.EndRequest && contentLength != EndRequestBodySize)
        {
            throw new FastCgiProtocolException($"FCGI_END_REQUEST with {contentLength} bytes of content, not {EndRequestBodySize}");
        }

        return (type, contentLength, paddingLength);
    }
}
