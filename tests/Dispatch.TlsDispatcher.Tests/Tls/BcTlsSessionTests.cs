using System.Net.Security;
using System.Security.Authentication;
using Dispatch.TlsDispatcher.Tls;
using Dispatch.Wire.Tls;

namespace Dispatch.TlsDispatcher.Tests.Tls;

/// <summary>
/// <see cref="BcTlsSession"/> without sockets: record framing (one record at a time, bytes past the handshake held
/// as ciphertext) and the export for the hand-off, proven by a record layer written in the test from the RFCs
/// (<see cref="TestRecordLayer"/>) that decrypts what a real client (SslStream) sends next and encrypts a reply the
/// client reads.
/// </summary>
public sealed class BcTlsSessionTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);

    private sealed class Pair : IDisposable
    {
        public required BcTlsSession Session { get; init; }

        public required SslStream Client { get; init; }

        public required MemoryDuplex.Endpoint Pipe { get; init; }

        public required Task Handshake { get; init; }

        public byte[] Buffer { get; } = new byte[256 * 1024];

        public void Dispose()
        {
            Session.Dispose();
            Client.Dispose();
        }

        /// <summary>All chunks the client has written so far, concatenated (they were written before the call).</summary>
        public byte[] DrainWritten()
        {
            var all = new List<byte>();
            int n;
            while ((n = Pipe.Read(Buffer, TimeSpan.Zero)) > 0)
                all.AddRange(Buffer.AsSpan(0, n));
            return [.. all];
        }

        public void SendOutput()
        {
            int n = Session.ReadOutputToNetwork(Buffer, 0, Buffer.Length);
            Pipe.Write(Buffer.AsSpan(0, n));
        }
    }

    private static Pair Start(string serverName, SslProtocols protocols, TlsCipherSuite? suite = null, BcServerCredentials? credentials = null, SessionTicketKeys? tickets = null)
    {
        (Stream clientStream, MemoryDuplex.Endpoint pipe) = MemoryDuplex.Create();
        var session = new BcTlsSession(credentials ?? TlsTestServer.DefaultRoute(serverName), ["h2", "http/1.1"], tickets: tickets, vhost: tickets is null ? null : serverName);
        var client = new SslStream(clientStream);
        Task handshake = client.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = serverName,
            EnabledSslProtocols = protocols,
            ApplicationProtocols = [SslApplicationProtocol.Http2, SslApplicationProtocol.Http11],
            CertificateChainPolicy = TestPki.Shared.ChainPolicy(),
            CipherSuitesPolicy = suite is { } s ? new CipherSuitesPolicy([s]) : null,
        });
        return new Pair { Session = session, Client = client, Pipe = pipe, Handshake = handshake };
    }

    /// <summary>
    /// Runs the handshake; the client then writes <paramref name="early"/>. TLS 1.3: the client is done once it has
    /// sent its Finished and writes at once, so the server reads the Finished and the first application record in
    /// one piece (returned). TLS 1.2: the client waits for our Finished, so its record comes later.
    /// </summary>
    private static async Task<byte[]> HandshakeAsync(Pair p, byte[] early)
    {
        int n = p.Pipe.Read(p.Buffer, Wait); // ClientHello
        Assert.True(n > 0);
        p.Session.Offer(p.Buffer, 0, n);
        p.SendOutput();
        if (p.Session.ProtocolVersion == "TLSv1.3")
        {
            await p.Handshake.WaitAsync(Wait);
            await p.Client.WriteAsync(early);
            byte[] both = p.DrainWritten();
            p.Session.Offer(both, 0, both.Length);
            p.SendOutput();
            Assert.True(p.Session.HandshakeComplete);
            return both;
        }

        while (!p.Session.HandshakeComplete)
        {
            n = p.Pipe.Read(p.Buffer, Wait);
            Assert.True(n > 0, "the client stopped sending during the handshake");
            p.Session.Offer(p.Buffer, 0, n);
            p.SendOutput();
        }

        await p.Handshake.WaitAsync(Wait);
        await p.Client.WriteAsync(early);
        return [];
    }

    [Theory]
    [InlineData(TlsCipherSuite.TLS_AES_128_GCM_SHA256, "ecdsa.example")]
    [InlineData(TlsCipherSuite.TLS_AES_256_GCM_SHA384, "rsa.example")]
    [InlineData(TlsCipherSuite.TLS_CHACHA20_POLY1305_SHA256, "both.example")]
    public async Task Tls13_export_decrypts_the_clients_next_record_and_encrypts_a_reply(TlsCipherSuite suite, string serverName)
    {
        using Pair p = Start(serverName, SslProtocols.Tls13, suite);
        byte[] lastFlight = await HandshakeAsync(p, "GET / HTTP/1.1\r\n\r\n"u8.ToArray());
        Assert.Equal("TLSv1.3", p.Session.ProtocolVersion);
        Assert.Equal("h2", p.Session.ApplicationProtocol);

        // The client's Finished and its first application record came in one piece: BouncyCastle saw the Finished
        // only; the application record is held, still ciphertext.
        int held = p.Session.HeldCiphertextLength;
        Assert.True(held > 0);
        Assert.True(held < lastFlight.Length);
        Assert.Equal(0, p.Session.PlaintextAvailable);

        Assert.True(p.Session.TryExportForHandOff(out TlsSessionState? state, out ReadOnlyMemory<byte> remaining));
        Assert.NotNull(state);
        Assert.Equal(TlsSessionState.Tls13, state.Version);
        Assert.Equal((ushort)suite, state.CipherSuite);
        Assert.Equal(suite == TlsCipherSuite.TLS_AES_256_GCM_SHA384 ? 48 : 32, state.ClientSecret.Length);
        Assert.Empty(state.ClientIv);
        Assert.Equal(0UL, state.ReadSequence);
        Assert.Equal(0UL, state.WriteSequence);
        Assert.Equal(lastFlight.AsSpan(lastFlight.Length - held).ToArray(), remaining.ToArray());
        p.Session.Dispose();

        var layer = new TestRecordLayer(state);
        (byte type, byte[] content) = layer.Decrypt(remaining.Span);
        Assert.Equal(23, type);
        Assert.Equal("GET / HTTP/1.1\r\n\r\n"u8.ToArray(), content);

        p.Pipe.Write(layer.Encrypt("HTTP/1.1 204 No Content\r\n\r\n"u8));
        byte[] reply = new byte[27];
        await p.Client.ReadExactlyAsync(reply).AsTask().WaitAsync(Wait);
        Assert.Equal("HTTP/1.1 204 No Content\r\n\r\n"u8.ToArray(), reply);

        // Later records follow on with the next sequence numbers.
        await p.Client.WriteAsync("more"u8.ToArray());
        int n = p.Pipe.Read(p.Buffer, Wait);
        Assert.Equal("more"u8.ToArray(), layer.Decrypt(p.Buffer.AsSpan(0, n)).Content);
    }

    [Theory]
    [InlineData(TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "ecdsa.example", 16, 4)]
    [InlineData(TlsCipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, "rsa.example", 32, 4)]
    [InlineData(TlsCipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, "both.example", 32, 12)]
    [InlineData(TlsCipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, "rsa.example", 32, 12)]
    public async Task Tls12_export_decrypts_the_clients_next_record_and_encrypts_a_reply(TlsCipherSuite suite, string serverName, int keyLength, int ivLength)
    {
        using Pair p = Start(serverName, SslProtocols.Tls12, suite);
        await HandshakeAsync(p, "ping"u8.ToArray());
        Assert.Equal("TLSv1.2", p.Session.ProtocolVersion);

        Assert.True(p.Session.TryExportForHandOff(out TlsSessionState? state, out ReadOnlyMemory<byte> remaining));
        Assert.NotNull(state);
        Assert.Equal(TlsSessionState.Tls12, state.Version);
        Assert.Equal((ushort)suite, state.CipherSuite);
        Assert.Equal(keyLength, state.ClientSecret.Length);
        Assert.Equal(keyLength, state.ServerSecret.Length);
        Assert.Equal(ivLength, state.ClientIv.Length);
        Assert.Equal(ivLength, state.ServerIv.Length);
        Assert.Equal(1UL, state.ReadSequence); // the client's Finished was record 0 under these keys
        Assert.Equal(1UL, state.WriteSequence); // and ours
        Assert.True(remaining.IsEmpty);
        p.Session.Dispose();

        var layer = new TestRecordLayer(state);
        int n = p.Pipe.Read(p.Buffer, Wait);
        Assert.Equal("ping"u8.ToArray(), layer.Decrypt(p.Buffer.AsSpan(0, n)).Content);
        p.Pipe.Write(layer.Encrypt("pong"u8));
        byte[] reply = new byte[4];
        await p.Client.ReadExactlyAsync(reply).AsTask().WaitAsync(Wait);
        Assert.Equal("pong"u8.ToArray(), reply);
    }

    [Fact]
    public async Task With_tickets_a_NewSessionTicket_goes_first_and_the_export_starts_at_write_sequence_1()
    {
        using Pair p = Start("ecdsa.example", SslProtocols.Tls13, tickets: new SessionTicketKeys());
        await HandshakeAsync(p, "hi"u8.ToArray());
        Assert.True(p.Session.TicketIssued);
        Assert.True(p.Session.TryExportForHandOff(out TlsSessionState? state, out ReadOnlyMemory<byte> remaining));
        Assert.Equal(0UL, state!.ReadSequence);
        Assert.Equal(1UL, state.WriteSequence); // the NewSessionTicket was record 0 under the application key
        var layer = new TestRecordLayer(state);
        Assert.Equal("hi"u8.ToArray(), layer.Decrypt(remaining.Span).Content);
        p.Pipe.Write(layer.Encrypt("there"u8));
        byte[] reply = new byte[5];
        await p.Client.ReadExactlyAsync(reply).AsTask().WaitAsync(Wait); // after the ticket, which SslStream takes in passing
        Assert.Equal("there"u8.ToArray(), reply);
    }

    [Fact]
    public void Tickets_open_only_at_their_vhost_within_their_lifetime_and_across_one_rotation()
    {
        DateTimeOffset now = DateTimeOffset.UnixEpoch.AddYears(56);
        var keys = new SessionTicketKeys(() => now);
        byte[] psk = [.. Enumerable.Range(1, 32).Select(i => (byte)i)];
        byte[] ticket = keys.Issue("A.Example", 0x1301, psk, 7);
        Assert.True(keys.TryOpen(ticket, "a.example", out int suite, out byte[] opened));
        Assert.Equal(0x1301, suite);
        Assert.Equal(psk, opened);
        Assert.False(keys.TryOpen(ticket, "b.example", out _, out _));
        byte[] tampered = (byte[])ticket.Clone();
        tampered[^1] ^= 1;
        Assert.False(keys.TryOpen(tampered, "a.example", out _, out _));
        Assert.False(new SessionTicketKeys(() => now).TryOpen(ticket, "a.example", out _, out _)); // another process's keys

        // A rotation keeps the previous key for opening; the lifetime still bounds the ticket.
        now += SessionTicketKeys.RotateEvery;
        byte[] newer = keys.Issue("a.example", 0x1302, psk, 8);
        Assert.NotEqual(ticket.AsSpan(0, 4).ToArray(), newer.AsSpan(0, 4).ToArray());
        Assert.True(keys.TryOpen(ticket, "a.example", out _, out _));
        now += TimeSpan.FromSeconds(1);
        Assert.False(keys.TryOpen(ticket, "a.example", out _, out _)); // older than its lifetime
        Assert.True(keys.TryOpen(newer, "a.example", out suite, out _));
        Assert.Equal(0x1302, suite);
    }

    [Fact]
    public async Task Plaintext_written_before_the_export_advances_the_write_sequence()
    {
        using Pair p = Start("ecdsa.example", SslProtocols.Tls13);
        await HandshakeAsync(p, "x"u8.ToArray());
        p.Session.WritePlaintext("early"u8);
        p.SendOutput();
        Assert.True(p.Session.TryExportForHandOff(out TlsSessionState? state, out _));
        Assert.Equal(1UL, state!.WriteSequence);
        var layer = new TestRecordLayer(state);
        p.Pipe.Write(layer.Encrypt("late"u8));
        byte[] reply = new byte[9];
        await p.Client.ReadExactlyAsync(reply).AsTask().WaitAsync(Wait);
        Assert.Equal("earlylate"u8.ToArray(), reply);
    }

    [Fact]
    public async Task Export_is_refused_before_the_handshake_completes_with_output_pending_or_after_release()
    {
        using Pair p = Start("ecdsa.example", SslProtocols.Tls12);
        int n = p.Pipe.Read(p.Buffer, Wait);
        p.Session.Offer(p.Buffer, 0, n);
        Assert.False(p.Session.TryExportForHandOff(out TlsSessionState? state, out _)); // mid-handshake
        Assert.Null(state);
        p.SendOutput();
        n = p.Pipe.Read(p.Buffer, Wait);
        p.Session.Offer(p.Buffer, 0, n);
        Assert.True(p.Session.HandshakeComplete);
        Assert.False(p.Session.TryExportForHandOff(out _, out _)); // our Finished not sent yet
        p.SendOutput();
        await p.Handshake.WaitAsync(Wait);
        p.Session.ReleaseHeldInput();
        Assert.False(p.Session.TryExportForHandOff(out _, out _)); // plaintext mode: BouncyCastle owns the records now
    }

    [Fact]
    public async Task Records_split_at_every_byte_still_complete_the_handshake()
    {
        using Pair p = Start("both.example", SslProtocols.Tls13);
        while (!p.Session.HandshakeComplete)
        {
            if (p.Handshake.IsCompleted)
                await p.Handshake;
            int n = p.Pipe.Read(p.Buffer, Wait);
            Assert.True(n > 0);
            for (int i = 0; i < n; i++)
                p.Session.Offer(p.Buffer, i, 1);
            p.SendOutput();
        }

        await p.Handshake.WaitAsync(Wait);
        Assert.Equal(0, p.Session.HeldCiphertextLength);
        Assert.True(p.Session.TryExportForHandOff(out _, out ReadOnlyMemory<byte> remaining));
        Assert.True(remaining.IsEmpty);
    }

    [Fact]
    public async Task A_record_longer_than_tls_allows_is_refused_from_its_header()
    {
        using var session = new BcTlsSession(TestPki.Shared.Both, ["http/1.1"]);
        byte[] header = [22, 3, 1, 0x48, 0x01]; // 18433 bytes announced
        BcTlsException e = Assert.Throws<BcTlsException>(() => session.Offer(header, 0, header.Length));
        Assert.True(session.IsClosed);
        Assert.Equal((byte)22, session.AlertSent); // record_overflow
        Assert.Contains("record_overflow", e.Message, StringComparison.Ordinal);
        await Task.CompletedTask;
    }

    [Theory]
    [InlineData(SslProtocols.Tls13, 1UL)]
    [InlineData(SslProtocols.Tls12, 2UL)]
    public async Task Identity_vhosts_decrypt_held_records_one_by_one_and_export_past_them(SslProtocols protocol, ulong readSequence)
    {
        using Pair p = Start("ecdsa.example", protocol);
        await HandshakeAsync(p, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray());
        await p.Client.WriteAsync("second record"u8.ToArray());
        byte[] more = p.DrainWritten();
        if (more.Length == 0)
        {
            int n = p.Pipe.Read(p.Buffer, Wait);
            more = p.Buffer.AsSpan(0, n).ToArray();
        }

        p.Session.Offer(more, 0, more.Length);
        int heldBefore = p.Session.HeldCiphertextLength;

        // One record at a time: the first request's record is decrypted, the next stays ciphertext.
        Assert.True(p.Session.TryDecryptHeldRecord());
        byte[] plain = new byte[256];
        int got = p.Session.ReadPlaintext(plain, 0, plain.Length);
        Assert.Equal("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8.ToArray(), plain.AsSpan(0, got).ToArray());
        Assert.True(p.Session.HeldCiphertextLength < heldBefore);
        Assert.True(p.Session.TryExportForHandOff(out TlsSessionState? state, out ReadOnlyMemory<byte> remaining));
        Assert.Equal(readSequence, state!.ReadSequence);
        p.Session.Dispose();

        var layer = new TestRecordLayer(state);
        Assert.Equal("second record"u8.ToArray(), layer.Decrypt(remaining.Span).Content);
        p.Pipe.Write(layer.Encrypt("reply"u8));
        byte[] reply = new byte[5];
        await p.Client.ReadExactlyAsync(reply).AsTask().WaitAsync(Wait);
        Assert.Equal("reply"u8.ToArray(), reply);
    }

    [Fact]
    public async Task Decrypted_plaintext_not_yet_read_blocks_the_export()
    {
        using Pair p = Start("ecdsa.example", SslProtocols.Tls13);
        await HandshakeAsync(p, "unread"u8.ToArray());
        Assert.True(p.Session.TryDecryptHeldRecord());
        Assert.False(p.Session.TryDecryptHeldRecord()); // nothing more held
        Assert.False(p.Session.TryExportForHandOff(out _, out _)); // "unread" is still waiting
        Assert.Equal(6, p.Session.ReadPlaintext(new byte[16], 0, 16));
        Assert.True(p.Session.TryExportForHandOff(out _, out _));
    }
}
