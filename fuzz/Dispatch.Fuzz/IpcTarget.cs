using System.Buffers.Binary;
using System.Text.Json;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Wire.Payloads;

namespace Dispatch.Fuzz;

/// <summary>
/// Every IPC decoder, in both directions, as if the peer were compromised. The input is one datagram sent on a real
/// SOCK_SEQPACKET pair and received by <see cref="IpcChannel.ReceiveBlocking"/> (header checks included), then decoded
/// with <see cref="IpcMessage.Decode{T}"/> for its type, as the receiving process's dispatch table would; or one of
/// the JSON payloads that travel in sealed memfds (route snapshot, pool settings).
/// </summary>
/// <remarks>
/// Input: byte 0 chooses the frame. 0: the rest is sent as it is (a raw datagram, header included). 1..N: a
/// well-formed header for the N-th message type of <see cref="Types"/> (current version, no descriptors, the right
/// length) and the rest as its payload. N+1 and N+2: the rest is a route snapshot or pool settings JSON; N+3: a
/// dispatcher's table of the vhosts' traffic (<see cref="VhostTraffic.DecodeTable"/>, a sealed memfd's content).
/// Documented rejection: <see cref="WireException"/> (and <see cref="JsonException"/> for the JSON payloads).
/// </remarks>
internal sealed class IpcTarget : IFuzzTarget
{
    /// <summary>Every message type, in a fixed order (the selector byte's meaning must not change: corpora depend on it).</summary>
    public static readonly MessageType[] Types =
    [
        MessageType.Hello, MessageType.JailSpec, MessageType.JailProof, MessageType.Ready, MessageType.Stop,
        MessageType.DispatcherSetup, MessageType.NeedWorker, MessageType.WorkerReady, MessageType.WorkerRefused,
        MessageType.WorkerGone, MessageType.RouteUpdate, MessageType.StatsRequest, MessageType.DispatcherStats,
        MessageType.MetricsRequest, MessageType.MetricsReply, MessageType.WorkerSetup, MessageType.LogFiles,
        MessageType.ErrorLogFiles, MessageType.Connection, MessageType.WorkerLoad, MessageType.WorkerTraffic,
    ];

    public const byte RawSelector = 0;

    public static readonly byte SnapshotSelector = (byte)(Types.Length + 1);

    public static readonly byte PoolSelector = (byte)(Types.Length + 2);

    public static readonly byte TrafficTableSelector = (byte)(Types.Length + 3);

    private IpcChannel? _channel;
    private int _peer = -1;

    public string Name => "ipc";

    public string Description => "IpcChannel.ReceiveBlocking + IpcMessage.Decode<T> for every message type; SnapshotJson.ParseSnapshot/ParsePool; VhostTraffic.DecodeTable";

    /// <summary>The fuzz input that carries <paramref name="payload"/> as a message of <paramref name="type"/>.</summary>
    public static byte[] Input(MessageType type, ReadOnlySpan<byte> payload) => [(byte)(Array.IndexOf(Types, type) + 1), .. payload];

    public void Run(ReadOnlySpan<byte> data)
    {
        // An empty input is an empty raw datagram (afl-fuzz's first run may be an empty one, and it must reach the parser).
        var selector = data.IsEmpty ? RawSelector : (byte)(data[0] % (Types.Length + 4));
        var rest = data.IsEmpty ? data : data[1..];
        if (selector == TrafficTableSelector)
        {
            try
            {
                _ = VhostTraffic.DecodeTable(rest);
            }
            catch (WireException)
            {
            }

            return;
        }

        if (selector == SnapshotSelector || selector == PoolSelector)
        {
            try
            {
                _ = selector == SnapshotSelector ? (object)SnapshotJson.ParseSnapshot(rest) : SnapshotJson.ParsePool(rest);
            }
            catch (JsonException)
            {
            }

            return;
        }

        byte[] datagram;
        if (selector == RawSelector)
        {
            datagram = rest.ToArray();
        }
        else
        {
            datagram = new byte[IpcChannel.HeaderSize + rest.Length];
            BinaryPrimitives.WriteUInt16LittleEndian(datagram, (ushort)Types[selector - 1]);
            datagram[2] = IpcChannel.Version;
            datagram[3] = 0;
            BinaryPrimitives.WriteUInt32LittleEndian(datagram.AsSpan(4), (uint)rest.Length);
            rest.CopyTo(datagram.AsSpan(IpcChannel.HeaderSize));
        }

        if (datagram.Length > IpcChannel.MaxDatagram)
            return; // The kernel refuses it with EMSGSIZE on the sender's side: it never reaches a decoder.
        Send(datagram);
        IpcMessage? message;
        try
        {
            message = _channel!.ReceiveBlocking(5000);
        }
        catch (WireException)
        {
            return;
        }

        if (message is null)
            return; // End of stream: an empty datagram reads as the peer closing, and the channel is dropped.
        using (message)
        {
            try
            {
                Decode(message);
            }
            catch (WireException)
            {
            }
        }
    }

    /// <summary>What the receiving process's dispatch table calls for each type.</summary>
    private static object? Decode(IpcMessage message) => message.Type switch
    {
        MessageType.Hello => message.Decode<Hello>(),
        MessageType.JailSpec => message.Decode<JailSpec>(),
        MessageType.JailProof => message.Decode<JailProof>(),
        MessageType.Ready => message.Decode<Ready>(),
        MessageType.Stop => message.Decode<Stop>(),
        MessageType.DispatcherSetup => message.Decode<DispatcherSetup>(),
        MessageType.NeedWorker => message.Decode<NeedWorker>(),
        MessageType.WorkerReady => message.Decode<WorkerReady>(),
        MessageType.WorkerRefused => message.Decode<WorkerRefused>(),
        MessageType.WorkerGone => message.Decode<WorkerGone>(),
        MessageType.RouteUpdate => message.Decode<RouteUpdate>(),
        MessageType.StatsRequest => message.Decode<StatsRequest>(),
        MessageType.DispatcherStats => message.Decode<DispatcherStats>(),
        MessageType.MetricsRequest => message.Decode<MetricsRequest>(),
        MessageType.MetricsReply => message.Decode<MetricsReply>(),
        MessageType.WorkerSetup => message.Decode<WorkerSetup>(),
        MessageType.LogFiles => message.Decode<LogFiles>(),
        MessageType.ErrorLogFiles => message.Decode<ErrorLogFiles>(),
        MessageType.Connection => message.Decode<Connection>(),
        MessageType.WorkerLoad => message.Decode<WorkerLoad>(),
        MessageType.WorkerTraffic => message.Decode<WorkerTraffic>(),
        _ => null, // An unknown type: the dispatch table drops the peer (no decoder runs).
    };

    private unsafe void Send(byte[] datagram)
    {
        if (_channel is null)
            _channel = IpcChannel.CreatePair("fuzzed peer", out _peer);
        fixed (byte* p = datagram)
        {
            if (Libc.Send(_peer, p, (nuint)datagram.Length, 0) != datagram.Length)
                throw new InvalidOperationException($"send to the channel failed: {Libc.Describe(Libc.LastError)}");
        }
    }
}
