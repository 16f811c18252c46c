using System.Buffers.Binary;
using System.Reflection;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Wire.Interop;

namespace Dispatch.Tests.Wire;

/// <summary>
/// Every channel end's table (<see cref="Peers"/>), bound to recording handlers and fed real datagrams
/// over a real SOCK_SEQPACKET pair: every message type out of its phase (and every type the end does not
/// accept, and an unknown type) is refused, and so is every accepted type with one descriptor more or
/// one fewer than its exact count; the handler runs only for the right type, phase and count; and every
/// descriptor of a refused message is closed. The cases are generated from the tables and the catalogue.
/// </summary>
public sealed class PeerTableTests
{
    private const ushort UnknownType = 999;

    /// <summary>Every wire message type of the catalogue, found by reflection: MessageType → CLR type.</summary>
    private static readonly Dictionary<MessageType, Type> Catalogue = typeof(IpcChannel).Assembly.GetTypes()
        .Where(t => t.GetInterfaces().Any(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(IWireMessage<>)))
        .ToDictionary(t => (MessageType)t.GetProperty("Type", BindingFlags.Public | BindingFlags.Static)!.GetValue(null)!);

    /// <summary>One well-formed message of each type (fixture data: the cases below are generated).</summary>
    private static readonly Dictionary<MessageType, object> Samples = new object[]
    {
        new Hello(ProcessRole.Worker, 1234),
        new JailSpec(ProcessRole.Worker, 10001, 10001, [], [], [], [], [], "a", [], []),
        new JailProof(10001, 10001, true, true, []),
        new Ready("ok"),
        new Stop(1000),
        new DispatcherSetup([new ListenerInfo("http", "127.0.0.1:8080", []), new ListenerInfo("tls", "127.0.0.1:8443", [])], [], 4),
        new NeedWorker(1, "a"),
        new WorkerReady(1, "a", 2, 3),
        new WorkerRefused(1, "a", "limit"),
        new WorkerGone(2, "a", "exited"),
        new RouteUpdate(["b"]),
        new StatsRequest(7),
        new DispatcherStats(7, [], []),
        new MetricsRequest(8),
        new MetricsReply(8, true),
        new WorkerSetup("a", 2, "{}"u8.ToArray(), [], 4, 2),
        new LogFiles(["a.localhost", "b.localhost"]),
        new ErrorLogFiles(["a.localhost"]),
        new Connection(5, ConnectionMode.PlainHttp, AppProtocol.Http1, "127.0.0.1:5000", "127.0.0.1:8080", null, null, null, "GET / HTTP/1.1\r\n"u8.ToArray()),
        new WorkerLoad(1, 2),
        new WorkerTraffic([VhostTraffic.Empty("a.localhost")]),
    }.ToDictionary(m => (MessageType)m.GetType().GetProperty("Type", BindingFlags.Public | BindingFlags.Static)!.GetValue(null)!);

    public static TheoryData<string> Ends => [.. Peers.All.Select(s => s.Name)];

    [Fact]
    public void Every_message_type_has_its_wire_type_and_a_sample_and_every_end_lists_each_type_once()
    {
        foreach (var type in Enum.GetValues<MessageType>())
        {
            Assert.True(Catalogue.ContainsKey(type), $"{type} has no IWireMessage type");
            Assert.True(Samples.ContainsKey(type), $"{type} has no sample in this test");
        }

        foreach (var spec in Peers.All)
            Assert.Equal(spec.Rules.Count, spec.Rules.Select(r => r.Type).Distinct().Count());
        // Every type is accepted somewhere, except those sent before any table applies (JailSpec: stage 1 reads it alone).
        var accepted = Peers.All.SelectMany(s => s.Rules).Select(r => r.Type).ToHashSet();
        Assert.Equal([MessageType.JailSpec], Enum.GetValues<MessageType>().Where(t => !accepted.Contains(t)));
    }

    [Theory]
    [MemberData(nameof(Ends))]
    public async Task Every_type_out_of_phase_or_not_in_the_table_is_refused_and_its_descriptors_closed(string end)
    {
        var spec = Peers.All.Single(s => s.Name == end);
        var cases = 0;
        foreach (var phase in Enum.GetValues<PeerPhase>())
        {
            foreach (var type in Enum.GetValues<MessageType>().Where(t => !spec.Allows(t, phase)))
            {
                var (payload, count) = Encode(Samples[type]);
                var outcome = await DeliverAsync(spec, (ushort)type, payload, count, phase);
                Assert.True(outcome.Refused is not null, $"{end}: {type} while {phase} was accepted");
                Assert.Empty(outcome.Handled);
                Assert.True(outcome.DescriptorsClosed, $"{end}: {type} while {phase}: a descriptor stayed open");
                cases++;
            }

            var unknown = await DeliverAsync(spec, UnknownType, [], 1, phase);
            Assert.Contains("unknown message type 999", unknown.Refused, StringComparison.Ordinal);
            Assert.True(unknown.DescriptorsClosed);
        }

        Assert.True(cases >= Enum.GetValues<MessageType>().Length, $"{end}: only {cases} cases");
    }

    [Theory]
    [MemberData(nameof(Ends))]
    public async Task Every_accepted_type_with_a_wrong_descriptor_count_is_refused_and_with_the_right_one_handled(string end)
    {
        var spec = Peers.All.Single(s => s.Name == end);
        foreach (var rule in spec.Rules)
        {
            foreach (var phase in rule.Phases)
            {
                var (payload, count) = Encode(Samples[rule.Type]);
                foreach (var wrong in new[] { count + 1, count - 1 }.Where(c => c >= 0))
                {
                    var outcome = await DeliverAsync(spec, (ushort)rule.Type, payload, wrong, phase);
                    Assert.True(outcome.Refused is not null, $"{end}: {rule.Type} while {phase} with {wrong} descriptors (not {count}) was accepted");
                    Assert.Contains($"exactly {count} descriptors", outcome.Refused, StringComparison.Ordinal);
                    Assert.Empty(outcome.Handled);
                    Assert.True(outcome.DescriptorsClosed, $"{end}: {rule.Type} with {wrong} descriptors: a descriptor stayed open");
                }

                var right = await DeliverAsync(spec, (ushort)rule.Type, payload, count, phase);
                Assert.True(right.Refused is null, $"{end}: {rule.Type} while {phase}: {right.Refused}");
                Assert.Equal([rule.Type], right.Handled);
                Assert.True(right.DescriptorsClosed);
            }
        }
    }

    [Fact]
    public void A_table_refuses_a_handler_for_a_type_it_does_not_accept_and_a_missing_handler()
    {
        Assert.Throws<InvalidOperationException>(() => new PeerTable(Peers.WorkerFromDispatcher).On<Stop>((_, _) => { }));
        Assert.Throws<InvalidOperationException>(() => new PeerTable(Peers.WorkerFromMaster).On<Stop>((_, _) => { }).Complete());
    }

    [Fact]
    public void Sending_a_wrong_descriptor_count_is_refused_before_anything_is_sent()
    {
        using var a = IpcChannel.CreatePair("b", out var bFd);
        try
        {
            var e = Assert.Throws<WireException>(() => a.Send(new WorkerReady(1, "a", 2, 3)));
            Assert.Contains("exactly 1 descriptors", e.Message, StringComparison.Ordinal);
            Assert.Throws<WireException>(() => a.Send(new LogFiles(["a", "b"]), [bFd]));
        }
        finally
        {
            WireLibc.Close(bFd);
        }
    }

    private static (byte[] Payload, int Count) Encode(object message) =>
        ((byte[], int))typeof(PeerTableTests).GetMethod(nameof(EncodeTyped), BindingFlags.NonPublic | BindingFlags.Static)!
            .MakeGenericMethod(message.GetType()).Invoke(null, [message])!;

    private static (byte[] Payload, int Count) EncodeTyped<T>(T message)
        where T : IWireMessage<T>
    {
        var buffer = new byte[IpcChannel.MaxDatagram];
        var writer = new WireWriter(buffer);
        message.Encode(ref writer);
        return (buffer[..writer.Length], T.DescriptorCount(message));
    }

    private static void Bind<T>(PeerTable table, List<MessageType> handled)
        where T : IWireMessage<T> =>
        table.On<T>((_, _) => handled.Add(T.Type));

    private sealed record Outcome(string? Refused, List<MessageType> Handled, bool DescriptorsClosed);

    /// <summary>
    /// Sends one datagram of <paramref name="type"/> with <paramref name="descriptors"/> descriptors (each the
    /// write end of a fresh pipe, declared as such in the header) to a channel whose end dispatches it
    /// through <paramref name="spec"/>'s table in <paramref name="phase"/>; then disposes the message as
    /// every process does, and checks each pipe's read end sees EOF: no copy of a descriptor is left open.
    /// </summary>
    private static async Task<Outcome> DeliverAsync(PeerSpec spec, ushort type, byte[] payload, int descriptors, PeerPhase phase)
    {
        var handled = new List<MessageType>();
        var table = new PeerTable(spec);
        foreach (var rule in spec.Rules)
            typeof(PeerTableTests).GetMethod(nameof(Bind), BindingFlags.NonPublic | BindingFlags.Static)!.MakeGenericMethod(Catalogue[rule.Type]).Invoke(null, [table, handled]);
        table.Complete();

        using var receiver = IpcChannel.CreatePair("sender", out var senderFd);
        var pipes = Enumerable.Range(0, descriptors).Select(_ => Pipe()).ToList();
        string? refused = null;
        try
        {
            SendDatagram(senderFd, type, payload, [.. pipes.Select(p => p.Write)]);
            foreach (var (_, write) in pipes)
                WireLibc.Close(write);
            using var message = await receiver.ReceiveAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.NotNull(message);
            try
            {
                await table.DispatchAsync(message, phase);
            }
            catch (WireException e)
            {
                refused = e.Message;
            }
        }
        finally
        {
            WireLibc.Close(senderFd);
        }

        // The handlers here take no descriptor: the message's dispose closes them all (as after a refusal).
        var closed = pipes.Select(p => ReadsEof(p.Read)).ToList().TrueForAll(eof => eof);
        return new Outcome(refused, handled, closed);
    }

    /// <summary>A stream socketpair: the descriptor to send (Write) and the end that sees EOF once every copy of it is closed (Read).</summary>
    private static (int Read, int Write) Pipe() => IpcChannel.RawPair(Libc.SOCK_STREAM);

    /// <summary>Whether the stream's other end is closed everywhere (EOF); closes <paramref name="fd"/>.</summary>
    private static bool ReadsEof(int fd)
    {
        using var socket = new System.Net.Sockets.Socket(new System.Net.Sockets.SafeSocketHandle(fd, ownsHandle: true));
        if (!socket.Poll(TimeSpan.FromSeconds(5), System.Net.Sockets.SelectMode.SelectRead))
            return false;
        return socket.Receive(new byte[1]) == 0;
    }

    /// <summary>A raw datagram, past the sender's own checks: header (declared count = what travels), payload, SCM_RIGHTS.</summary>
    private static unsafe void SendDatagram(int fd, ushort type, byte[] payload, int[] fds)
    {
        var datagram = new byte[IpcChannel.HeaderSize + payload.Length];
        BinaryPrimitives.WriteUInt16LittleEndian(datagram, type);
        datagram[2] = IpcChannel.Version;
        datagram[3] = (byte)fds.Length;
        BinaryPrimitives.WriteUInt32LittleEndian(datagram.AsSpan(4), (uint)payload.Length);
        payload.CopyTo(datagram, IpcChannel.HeaderSize);
        var controlSize = WireLibc.CmsgSpace(Math.Max(1, fds.Length) * sizeof(int));
        var control = stackalloc byte[controlSize];
        new Span<byte>(control, controlSize).Clear();
        fixed (byte* data = datagram)
        {
            var iov = new WireLibc.IoVec { Base = data, Len = (nuint)datagram.Length };
            var msg = new WireLibc.MsgHdr { Iov = &iov, IovLen = 1 };
            if (fds.Length > 0)
            {
                var cmsg = (WireLibc.CmsgHdr*)control;
                cmsg->Len = (nuint)WireLibc.CmsgLen(fds.Length * sizeof(int));
                cmsg->Level = WireLibc.SOL_SOCKET;
                cmsg->Type = WireLibc.SCM_RIGHTS;
                var fdData = (int*)(control + WireLibc.CmsgAlign(sizeof(WireLibc.CmsgHdr)));
                for (var i = 0; i < fds.Length; i++)
                    fdData[i] = fds[i];
                msg.Control = control;
                msg.ControlLen = (nuint)WireLibc.CmsgSpace(fds.Length * sizeof(int));
            }

            Assert.True(WireLibc.SendMsg(fd, &msg, WireLibc.MSG_NOSIGNAL) == datagram.Length, $"sendmsg: errno {WireLibc.LastError}");
        }
    }
}
