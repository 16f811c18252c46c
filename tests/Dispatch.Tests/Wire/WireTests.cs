using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Dispatch.Wire.Interop;
using Dispatch.Wire.Tls;

namespace Dispatch.Tests.Wire;

public class WireTests
{
    private static T RoundTrip<T>(T message)
        where T : IWireMessage<T>
    {
        var buffer = new byte[IpcChannel.MaxDatagram];
        var writer = new WireWriter(buffer);
        message.Encode(ref writer);
        var reader = new WireReader(buffer.AsSpan(0, writer.Length));
        var decoded = T.Decode(ref reader);
        reader.End();
        return decoded;
    }

    [Fact]
    public void Messages_round_trip()
    {
        Assert.Equal(new NeedWorker(3, "pool"), RoundTrip(new NeedWorker(3, "pool")));
        Assert.Equal(new WorkerRefused(1, "p", "why"), RoundTrip(new WorkerRefused(1, "p", "why")));
        var spec = RoundTrip(new JailSpec(ProcessRole.Worker, 10001, 10001, [10005], ["/a"], ["/b"], ["/dev/null"], [new ResourceLimit(7, 10, 20)], "a", [new ModuleSpec("/usr/lib/dispatch-modules/libm.so", "m", "{}")], [8080]));
        Assert.Equal(10001u, spec.Uid);
        Assert.Equal(["/a"], spec.ReadPaths);
        Assert.Equal(new ResourceLimit(7, 10, 20), spec.Limits[0]);
        Assert.Empty(spec.CgroupProcs!);
        var joined = RoundTrip(new JailSpec(ProcessRole.Worker, 10001, 10001, [], [], [], [], [], "a", [], [], "/opt/w", ["/sys/fs/cgroup/pids/dispatch/a/cgroup.procs"]));
        Assert.Equal("/opt/w", joined.Program);
        Assert.Equal(["/sys/fs/cgroup/pids/dispatch/a/cgroup.procs"], joined.CgroupProcs!);
        Assert.Equal([], spec.TenantWritePaths ?? ["missing"]);
        var withWrite = RoundTrip(new JailSpec(ProcessRole.Worker, 10001, 10001, [], [], [], ["/dev/null"], [], "a", [], [5432], "/p", [], ["/srv/a/uploads"]));
        Assert.Equal(["/srv/a/uploads"], withWrite.TenantWritePaths ?? []);
        Assert.Equal("/p", withWrite.Program);
        Assert.Equal(["a.localhost", "b.localhost"], RoundTrip(new ErrorLogFiles(["a.localhost", "b.localhost"])).Vhosts);
        Assert.Null(spec.Chroot);
        Assert.True(spec.Landlock);
        var chrooted = RoundTrip(new JailSpec(ProcessRole.Worker, 10001, 10001, [], [], [], [], [], "a", [], [], string.Empty, null, null, new ChrootSpec(8 << 20, ["/srv/a"], ["/srv/a/up"]), Landlock: false));
        Assert.Equal(8UL << 20, chrooted.Chroot!.TmpBytes);
        Assert.Equal(["/srv/a"], chrooted.Chroot.ReadOnly);
        Assert.Equal(["/srv/a/up"], chrooted.Chroot.Writable);
        Assert.False(chrooted.Landlock);
        // A proof may carry lstat results (one per probe) or, from an older worker program, none.
        var probe = new ProbeResult("/etc/passwd", 8, 0, "child denied", false);
        Assert.Equal([2], RoundTrip(new JailProof(10001, 10001, true, true, [probe], [2])).LStatErrors!);
        Assert.Null(RoundTrip(new JailProof(10001, 10001, true, true, [probe])).LStatErrors);
        var c = RoundTrip(new Connection(9, ConnectionMode.TerminatedTls, AppProtocol.Http1, "1.2.3.4:5", "[::1]:443", "a.example", "TLSv1.2", "X", new byte[] { 1, 2, 3 }));
        Assert.Equal("a.example", c.Sni);
        Assert.Equal([1, 2, 3], c.Initial.ToArray());
    }

    [Fact]
    public void A_handed_tls_connection_carries_its_session_state()
    {
        var session = new TlsSessionState(TlsSessionState.Tls12, 0xC02F, [1, 2], [3, 4], [5, 6, 7, 8], [9, 10, 11, 12], 1, ulong.MaxValue - 1);
        var c = RoundTrip(new Connection(7, ConnectionMode.HandedTls, AppProtocol.Http2, "1.2.3.4:5", "[::1]:443", "a.example", "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", new byte[] { 23, 3 }, session));
        Assert.Equal(ConnectionMode.HandedTls, c.Mode);
        Assert.Equal([23, 3], c.Initial.ToArray());
        var s = c.Session!;
        Assert.Equal((TlsSessionState.Tls12, (ushort)0xC02F), (s.Version, s.CipherSuite));
        Assert.Equal([1, 2], s.ClientSecret);
        Assert.Equal([3, 4], s.ServerSecret);
        Assert.Equal([5, 6, 7, 8], s.ClientIv);
        Assert.Equal([9, 10, 11, 12], s.ServerIv);
        Assert.Equal((1UL, ulong.MaxValue - 1), (s.ReadSequence, s.WriteSequence));
        Assert.Null(RoundTrip(new Connection(7, ConnectionMode.TerminatedTls, AppProtocol.Http1, "c", "l", null, null, null, default)).Session);

        // A session only with mode HandedTls, and always with it.
        var buffer = new byte[512];
        Assert.Throws<InvalidOperationException>(() =>
        {
            var w = new WireWriter(buffer);
            new Connection(7, ConnectionMode.TerminatedTls, AppProtocol.Http1, "c", "l", null, null, null, default, session).Encode(ref w);
        });
        Assert.Throws<InvalidOperationException>(() =>
        {
            var w = new WireWriter(buffer);
            new Connection(7, ConnectionMode.HandedTls, AppProtocol.Http1, "c", "l", null, null, null, default).Encode(ref w);
        });

        // An unknown version or mismatched secrets do not decode.
        foreach (var bad in new[]
        {
            new TlsSessionState(0x0302, 0xC02F, [1], [2], [], [], 0, 0),
            new TlsSessionState(TlsSessionState.Tls13, 0x1301, [1, 2], [3], [], [], 0, 0),
            new TlsSessionState(TlsSessionState.Tls13, 0x1301, [], [], [], [], 0, 0),
        })
        {
            var w = new WireWriter(buffer);
            bad.Encode(ref w);
            var length = w.Length;
            Assert.Throws<WireException>(() =>
            {
                var r = new WireReader(buffer.AsSpan(0, length));
                TlsSessionState.Decode(ref r);
            });
        }
    }

    [Fact]
    public void Trailing_bytes_truncation_and_oversized_fields_are_rejected()
    {
        var buffer = new byte[256];
        var writer = new WireWriter(buffer);
        new NeedWorker(1, "p").Encode(ref writer);
        var length = writer.Length;
        Assert.Throws<WireException>(() =>
        {
            var r = new WireReader(buffer.AsSpan(0, length + 1));
            NeedWorker.Decode(ref r);
            r.End();
        });
        Assert.Throws<WireException>(() =>
        {
            var r = new WireReader(buffer.AsSpan(0, length - 1));
            NeedWorker.Decode(ref r);
        });
        // A pool name longer than its 255-byte limit.
        var big = new byte[1024];
        var w = new WireWriter(big);
        w.I64(1);
        w.String(new string('x', 300));
        var len = w.Length;
        var ex = Assert.Throws<WireException>(() =>
        {
            var r = new WireReader(big.AsSpan(0, len));
            NeedWorker.Decode(ref r);
        });
        Assert.Contains("exceeds its 255-byte limit", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Random_payloads_never_escape_as_anything_but_WireException()
    {
        var rng = new Random(5);
        var decoders = new Action<byte[]>[]
        {
            b => Decode<Hello>(b), b => Decode<JailSpec>(b), b => Decode<JailProof>(b), b => Decode<DispatcherSetup>(b),
            b => Decode<NeedWorker>(b), b => Decode<WorkerReady>(b), b => Decode<WorkerRefused>(b), b => Decode<WorkerGone>(b),
            b => Decode<WorkerSetup>(b), b => Decode<Connection>(b), b => Decode<WorkerLoad>(b), b => Decode<Stop>(b), b => Decode<Ready>(b),
            b => Decode<WorkerTraffic>(b), b => Decode<DispatcherStats>(b), b => VhostTraffic.DecodeTable(b),
        };
        for (var i = 0; i < 50000; i++)
        {
            var data = new byte[rng.Next(0, 96)];
            rng.NextBytes(data);
            try
            {
                decoders[i % decoders.Length](data);
            }
            catch (WireException)
            {
            }
        }
    }

    private static void Decode<T>(byte[] data)
        where T : IWireMessage<T>
    {
        var r = new WireReader(data);
        T.Decode(ref r);
        r.End();
    }

    [Fact]
    public async Task A_declared_descriptor_count_that_differs_from_what_arrived_is_fatal_and_closes_them()
    {
        using var a = IpcChannel.CreatePair("b", out var bFd);
        using var b = IpcChannel.FromDescriptor(bFd, "a");
        var (x, y) = IpcChannel.RawPair(Libc.SOCK_STREAM);
        WireLibc.Close(y);
        // Forge a header declaring 2 descriptors while sending 1.
        SendForged(a.Descriptor, x);
        WireLibc.Close(x);
        var ex = await Assert.ThrowsAsync<WireException>(async () => await b.ReceiveAsync());
        Assert.Contains("declared 2 descriptors with WorkerLoad but 1 arrived", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_protocol_version_is_the_headers_alone_Hello_is_role_and_pid_and_a_frame_of_another_version_is_refused()
    {
        // Hello once carried a version of its own beside the header's: now u8 role | i32 pid, nothing more.
        var buffer = new byte[IpcChannel.MaxDatagram];
        var writer = new WireWriter(buffer);
        new Hello(ProcessRole.Worker, 1234).Encode(ref writer);
        Assert.Equal(5, writer.Length);

        // The header's version byte is the one checked, on every frame: a WorkerLoad (12 bytes) from version - 1.
        using var a = IpcChannel.CreatePair("b", out var bFd);
        using var b = IpcChannel.FromDescriptor(bFd, "a");
        var old = (byte)(IpcChannel.Version - 1);
        SendRaw(a.Descriptor, [(byte)MessageType.WorkerLoad, 0, old, 0, 12, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        var ex = await Assert.ThrowsAsync<WireException>(async () => await b.ReceiveAsync());
        Assert.Contains($"a speaks protocol version {old}, this side {IpcChannel.Version}", ex.Message, StringComparison.Ordinal);
    }

    /// <summary>One datagram as given, no descriptors: past the sender's own checks.</summary>
    private static unsafe void SendRaw(int fd, byte[] datagram)
    {
        fixed (byte* d = datagram)
        {
            var iov = new WireLibc.IoVec { Base = d, Len = (nuint)datagram.Length };
            var msg = new WireLibc.MsgHdr { Iov = &iov, IovLen = 1 };
            Assert.True(WireLibc.SendMsg(fd, &msg, 0) > 0);
        }
    }

    private static unsafe void SendForged(int fd, int x)
    {
        var datagram = new byte[] { (byte)MessageType.WorkerLoad, 0, IpcChannel.Version, 2, 4, 0, 0, 0, 1, 0, 0, 0 };
        var control = stackalloc byte[WireLibc.CmsgSpace(sizeof(int))];
        fixed (byte* d = datagram)
        {
            var iov = new WireLibc.IoVec { Base = d, Len = (nuint)datagram.Length };
            var cmsg = (WireLibc.CmsgHdr*)control;
            cmsg->Len = (nuint)WireLibc.CmsgLen(sizeof(int));
            cmsg->Level = WireLibc.SOL_SOCKET;
            cmsg->Type = WireLibc.SCM_RIGHTS;
            *(int*)(control + WireLibc.CmsgAlign(sizeof(WireLibc.CmsgHdr))) = x;
            var msg = new WireLibc.MsgHdr { Iov = &iov, IovLen = 1, Control = control, ControlLen = (nuint)WireLibc.CmsgSpace(sizeof(int)) };
            Assert.True(WireLibc.SendMsg(fd, &msg, 0) > 0);
        }
    }

    [Fact]
    public void A_sealed_blob_reads_back_and_an_unsealed_one_is_refused()
    {
        var fd = SealedBlob.Create("t", "hello"u8);
        try
        {
            Assert.Equal("hello"u8.ToArray(), SealedBlob.Read(fd, 100));
            Assert.Throws<WireException>(() => SealedBlob.Read(fd, 3));
        }
        finally
        {
            WireLibc.Close(fd);
        }

        var raw = WireLibc.MemfdCreate("u", WireLibc.MFD_CLOEXEC | WireLibc.MFD_ALLOW_SEALING);
        try
        {
            var ex = Assert.Throws<WireException>(() => SealedBlob.Read(raw, 100));
            Assert.Contains("not sealed", ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            WireLibc.Close(raw);
        }
    }
}
