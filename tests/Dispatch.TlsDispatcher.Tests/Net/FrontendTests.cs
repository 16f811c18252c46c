using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Dispatch.Platform.Net;
using Dispatch.TlsDispatcher.Net;

namespace Dispatch.TlsDispatcher.Tests.Net;

/// <summary>A connection's way from the accept to its protocol's handler: when it waits for its first bytes, and where it runs.</summary>
public sealed class FrontendTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);
    private const int Prelude = 10;

    private readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly ReadinessPoller _poller = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Socket> _clients = [];

    public FrontendTests()
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen();
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Dispose();
        foreach (var client in _clients)
            client.Dispose();
        _poller.Dispose();
        _stop.Dispose();
    }

    [Fact]
    public async Task A_prelude_already_queued_at_the_accept_is_handled_without_a_wait()
    {
        var frontend = new TestFrontend(_listener, _poller, onAcceptLoop: true);
        await ConnectAsync(Prelude); // in the kernel before the accept loop starts
        _ = frontend.RunAsync(_stop.Token);

        var handled = await frontend.Handled.Reader.ReadAsync().AsTask().WaitAsync(Patience);
        Assert.Equal(0, handled.WaitsBefore);
        Assert.Equal(0, _poller.Waits);
        Assert.Equal(1, handled.LowWater);
    }

    [Fact]
    public async Task A_partial_prelude_waits_for_the_rest_and_reaches_its_handler_with_the_low_mark_back_at_one()
    {
        var frontend = new TestFrontend(_listener, _poller, onAcceptLoop: true);
        var client = await ConnectAsync(4);
        _ = frontend.RunAsync(_stop.Token);
        var deadline = DateTime.UtcNow + Patience;
        while (_poller.Waits == 0 && DateTime.UtcNow < deadline)
            await Task.Delay(10);
        Assert.True(_poller.Waits > 0, "the partial prelude was not waited for");
        Assert.False(frontend.Handled.Reader.TryPeek(out _));

        await client.SendAsync(new byte[Prelude - 4]);
        var handled = await frontend.Handled.Reader.ReadAsync().AsTask().WaitAsync(Patience);
        Assert.True(handled.WaitsBefore >= 1);
        Assert.Equal(1, handled.LowWater);
    }

    [Fact]
    public async Task A_connection_whose_work_is_long_leaves_the_accept_loop_even_when_its_prelude_is_there()
    {
        // The first handler blocks its thread until the second has run: on the accept loop, the second would never be
        // accepted meanwhile.
        var frontend = new TestFrontend(_listener, _poller, onAcceptLoop: false);
        using var second = new ManualResetEventSlim();
        var first = true;
        frontend.OnHandle = () =>
        {
            if (Interlocked.Exchange(ref first, false))
                Assert.True(second.Wait(Patience), "the second connection was not handled while the first held its thread");
            else
                second.Set();
        };
        await ConnectAsync(Prelude);
        await ConnectAsync(Prelude);
        _ = frontend.RunAsync(_stop.Token);

        var a = await frontend.Handled.Reader.ReadAsync().AsTask().WaitAsync(Patience);
        var b = await frontend.Handled.Reader.ReadAsync().AsTask().WaitAsync(Patience);
        Assert.Equal(0, _poller.Waits);
        Assert.True(a.Failure is null && b.Failure is null, a.Failure ?? b.Failure);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Every_connection_is_non_blocking_and_has_no_delay_and_the_unsent_limit_from_its_listener(bool ipv6)
    {
        // Set once on the listener (ListenerOptions, by the master and again by the frontend), inherited by each accepted connection: neither the
        // dispatcher nor the worker sets them per connection any more.
        using var v6 = ipv6 ? new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp) : null;
        var listener = _listener;
        if (v6 is not null)
        {
            v6.Bind(new IPEndPoint(IPAddress.IPv6Loopback, 0));
            v6.Listen();
            listener = v6;
        }

        var frontend = new TestFrontend(listener, _poller, onAcceptLoop: true);
        await ConnectAsync(Prelude, listener);
        _ = frontend.RunAsync(_stop.Token);

        var handled = await frontend.Handled.Reader.ReadAsync().AsTask().WaitAsync(Patience);
        Assert.True(handled.NoDelay, "TCP_NODELAY is not set on the accepted connection");
        Assert.Equal(ListenerOptions.UnsentLimit, handled.UnsentLimit);
        Assert.Equal(0x800 /* O_NONBLOCK */ | 2 /* O_RDWR */, handled.StatusFlags);
    }

    [Fact]
    public async Task The_accept_loop_ends_when_told_to_stop_and_leaves_the_listener_listening_for_others()
    {
        // Its thread sleeps in poll(2) with nothing to accept; the stop wakes it. The socket is shared with the master and
        // the next dispatcher: it must still listen after. A new .NET socket is blocking, as the master's listeners are:
        // an accept on it would sleep where the stop cannot wake it, so the loop makes it non-blocking.
        var frontend = new TestFrontend(_listener, _poller, onAcceptLoop: true);
        Assert.Equal(0, Dispatch.Wire.Interop.WireLibc.Fcntl((int)_listener.Handle, 3 /* F_GETFL */, 0) & 0x800);
        using var stop = new CancellationTokenSource();
        var loop = frontend.RunAsync(stop.Token);
        await ConnectAsync(Prelude);
        await frontend.Handled.Reader.ReadAsync().AsTask().WaitAsync(Patience);
        Assert.False(loop.IsCompleted);

        await stop.CancelAsync();
        await loop.WaitAsync(Patience);
        Assert.Equal(0x800 /* O_NONBLOCK */, Dispatch.Wire.Interop.WireLibc.Fcntl((int)_listener.Handle, 3 /* F_GETFL */, 0) & 0x800);
        await ConnectAsync(Prelude);
        using var accepted = await _listener.AcceptAsync().WaitAsync(Patience);
        Assert.True(accepted.Connected);
        Assert.Equal(1, frontend.Accepted);
    }

    [Fact]
    public async Task A_visitors_handshake_takes_its_turn_before_a_floods_accepted_before_it()
    {
        // Both preludes are there at the accept, both connections leave the accept loop for the pool, the flood's first:
        // the visitor's is handled first all the same (ConnectionTurns). Run in the order they came, it would be second.
        var flood = IPAddress.Parse("127.0.0.2");
        var visitor = IPAddress.Parse("127.0.0.3");
        var tokens = new System.Collections.Concurrent.ConcurrentQueue<IThreadPoolWorkItem>();
        using var poller = new ReadinessPoller { Turns = new ConnectionTurns(a => a.Equals(flood) ? 100 : 0, tokens.Enqueue) };
        var frontend = new TestFrontend(_listener, poller, onAcceptLoop: false);
        await ConnectAsync(Prelude, _listener, flood);
        await ConnectAsync(Prelude, _listener, visitor);
        _ = frontend.RunAsync(_stop.Token);

        var deadline = DateTime.UtcNow + Patience;
        while (tokens.Count < 2 && DateTime.UtcNow < deadline)
            await Task.Delay(10);
        Assert.Equal(2, tokens.Count);
        Assert.False(frontend.Handled.Reader.TryPeek(out _));
        foreach (var expected in new[] { visitor, flood })
        {
            Assert.True(tokens.TryDequeue(out var token));
            await Task.Run(token.Execute).WaitAsync(Patience);
            var handled = await frontend.Handled.Reader.ReadAsync().AsTask().WaitAsync(Patience);
            Assert.Equal(expected, handled.Client);
        }

        Assert.Equal(0, poller.Waits);
    }

    private Task<Socket> ConnectAsync(int send) => ConnectAsync(send, _listener);

    private async Task<Socket> ConnectAsync(int send, Socket listener, IPAddress? from = null)
    {
        var client = new Socket(listener.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        _clients.Add(client);
        if (from is not null)
            client.Bind(new IPEndPoint(from, 0));
        await client.ConnectAsync(listener.LocalEndPoint!);
        if (send > 0)
        {
            await client.SendAsync(new byte[send]);
            await DeliveredAsync(client);
        }

        return client;
    }

    /// <summary>
    /// Until the peer has acknowledged everything sent (TCP_INFO's tcpi_unacked, at offset 24, is 0): the bytes are then
    /// in the listener's connection's queue, so the accept finds them there whatever the machine's load.
    /// </summary>
    private static async Task DeliveredAsync(Socket client)
    {
        var info = new byte[104];
        var deadline = DateTime.UtcNow + Patience;
        while (true)
        {
            Assert.True(client.GetRawSocketOption(6 /* IPPROTO_TCP */, 11 /* TCP_INFO */, info) >= 28);
            if (BitConverter.ToUInt32(info, 24) == 0)
                return;
            Assert.True(DateTime.UtcNow < deadline, "the bytes sent were never acknowledged");
            await Task.Delay(1);
        }
    }

    private sealed record Handling(long WaitsBefore, int LowWater, string? Failure, bool NoDelay, int UnsentLimit, int StatusFlags, IPAddress? Client);

    private sealed class TestFrontend(Socket listener, ReadinessPoller poller, bool onAcceptLoop)
        : Frontend(listener, "127.0.0.1:test", new TrustedProxies([]), poller, Serilog.Core.Logger.None)
    {
        public Channel<Handling> Handled { get; } = Channel.CreateUnbounded<Handling>();

        public Action OnHandle { get; set; } = () => { };

        public override string Name => "test";

        protected override int PreludeSize => 1024;

        protected override int PreludeTimeoutMs => 20_000;

        protected override bool HandleOnAcceptLoop => onAcceptLoop;

        protected override int PreludeNeeds(ReadOnlySpan<byte> queued) => Prelude;

        protected override Task HandleAsync(Socket client, ulong id, ConnectionStart start)
        {
            var waits = Poller.Waits;
            var lowWater = (int)client.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReceiveLowWater)!;
            var noDelay = (int)client.GetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.NoDelay)! != 0;
            var unsent = new byte[sizeof(int)];
            client.GetRawSocketOption(6 /* IPPROTO_TCP */, 25 /* TCP_NOTSENT_LOWAT */, unsent);
            var flags = Dispatch.Wire.Interop.WireLibc.Fcntl((int)client.SafeHandle.DangerousGetHandle(), 3 /* F_GETFL */, 0);
            string? failure = null;
            try
            {
                OnHandle();
            }
            catch (Exception e)
            {
                failure = e.Message;
            }

            Handled.Writer.TryWrite(new Handling(waits, lowWater, failure, noDelay, BitConverter.ToInt32(unsent), flags, start.Client?.Address));
            return Task.CompletedTask;
        }
    }
}
