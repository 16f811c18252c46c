using Dispatch.Wire;

namespace Dispatch.Tests.Wire.Messages;

/// <summary>The payload bytes of a message as its encoder writes them, and its decoder run on bytes as they are.</summary>
internal static class WireBytes
{
    public static byte[] Of<T>(T message)
        where T : IWireMessage<T>
    {
        var buffer = new byte[IpcChannel.MaxDatagram];
        var writer = new WireWriter(buffer);
        message.Encode(ref writer);
        return buffer.AsSpan(0, writer.Length).ToArray();
    }

    public static T Decode<T>(byte[] payload)
        where T : IWireMessage<T>
    {
        var reader = new WireReader(payload);
        var message = T.Decode(ref reader);
        reader.End();
        return message;
    }

    /// <summary>The decoder's refusal of <paramref name="payload"/>, which must say <paramref name="says"/>.</summary>
    public static void Refused<T>(byte[] payload, string says)
        where T : IWireMessage<T>
    {
        var e = Assert.Throws<WireException>(() => Decode<T>(payload));
        Assert.Contains(says, e.Message, StringComparison.Ordinal);
    }
}
