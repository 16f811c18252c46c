using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using Dispatch.Platform.Hosting;
using Dispatch.Wire.Payloads;
using Dispatch.Wire.Tls;
using Dispatch.Worker.Http;
using Dispatch.Worker.Tests.Support;
using Dispatch.Worker.Tls;
using Org.BouncyCastle.Tls;
using Serilog.Events;
using Xunit.Abstractions;

namespace Dispatch.Worker.Tests.Tls;

/// <summary>
/// The worker's TLS record layer over handed sessions: a real TLS client (BouncyCastle) completes its handshake with a
/// stand-in for the dispatcher, the server end of the TCP socket and the session state go to the worker, and the
/// client talks HTTP through its own record layer — or, for inputs a TLS library will not produce, record by record.
/// </summary>
public sealed class TlsRecordLayerTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const ushort Tls13 = TlsSessionState.Tls13;
    private const ushort Tls12 = TlsSessionState.Tls12;

    private static readonly byte[] Big = CreateBig();

    private readonly TempDir _dir = new();
    private Harness _harness = null!;
    private long _nextId = 100;

    public async Task InitializeAsync()
    {
        _dir.Write("site/index.html", "<h1>home</h1>");
        _dir.Write("site/ten.txt", "0123456789");
        _dir.Write("site/big.bin", Big);
        var sha = _dir.Write("cgi/sha.sh", "#!/bin/sh\nsum=$(sha256sum | cut -c1-64)\nprintf 'Content-Type: text/plain\\nContent-Length: 64\\n\\n%s' \"$sum\"\n");
        File.SetUnixFileMode(sha, (UnixFileMode)0x1ed);
        _harness = await Harness.StartAsync(Harness.Vhost("a.localhost", _dir.Combine("site")) with
        {
            Cgi = [new CgiRoute("/cgi-bin/", _dir.Combine("cgi"))],
            CgiTimeout = TimeSpan.FromSeconds(60),
        });
    }

    public async Task DisposeAsync()
    {
        await _harness.DisposeAsync();
        _dir.Dispose();
    }

    [Theory]
    [InlineData(Tls13, CipherSuite.TLS_AES_128_GCM_SHA256)]
    [InlineData(Tls13, CipherSuite.TLS_AES_256_GCM_SHA384)]
    [InlineData(Tls13, CipherSuite.TLS_CHACHA20_POLY1305_SHA256)]
    [InlineData(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)]
    [InlineData(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)]
    [InlineData(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)]
    public async Task A_real_client_gets_several_keep_alive_responses(ushort version, int suite)
    {
        using var connection = await OpenAsync(version, suite);
        var buffer = new List<byte>();
        foreach (var (path, body) in new[] { ("/ten.txt", "0123456789"), ("/", "<h1>home</h1>"), ("/ten.txt", "0123456789") })
        {
            await WriteAsync(connection.Stream, $"GET {path} HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
            var response = await HttpResponseParser.ReadAsync(connection.Stream, buffer);
            Assert.Equal(200, response.Status);
            Assert.Equal(body, response.Text);
        }

        // Seen as HTTPS with the handed TLS parameters, in the access log too.
        var access = _harness.Sink.AccessEvents.Last(e => CollectingSink.Scalar(e, "ConnectionId") == Id(connection));
        Assert.Equal(version == Tls13 ? "TLSv1.3" : "TLSv1.2", CollectingSink.Scalar(access, "TlsProtocol"));
        Assert.Equal("a.localhost", CollectingSink.Scalar(access, "Sni"));
        Assert.DoesNotContain(_harness.Sink.Events, e => e.Level >= LogEventLevel.Warning);
        output.WriteLine($"{connection.Info.TlsProtocol} {connection.Info.TlsCipher}: 3 responses");

        // The worker cleared the secrets it was handed.
        Assert.All(connection.Info.Session!.ServerSecret, b => Assert.Equal(0, b));
        Assert.All(connection.Info.Session!.ClientSecret, b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task Http2_over_a_handed_session()
    {
        using var connection = await OpenAsync(Tls13, CipherSuite.TLS_AES_128_GCM_SHA256, HandedProtocol.Http2);
        var stream = connection.Stream;

        // Preface, empty SETTINGS, then HEADERS (END_STREAM | END_HEADERS) for GET https://a.localhost/ten.txt:
        // :method GET (static 2), :scheme https (static 7), :path (name 4) and :authority (name 1) as literals.
        byte[] block = [0x82, 0x87, 0x04, 8, .. "/ten.txt"u8, 0x01, 11, .. "a.localhost"u8];
        byte[] request =
        [
            .. "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8,
            0, 0, 0, 4, 0, 0, 0, 0, 0,
            0, 0, (byte)block.Length, 1, 5, 0, 0, 0, 1, .. block,
        ];
        await stream.WriteAsync(request);
        await stream.FlushAsync();

        var status = -1;
        var body = new List<byte>();
        var end = false;
        while (!end)
        {
            var header = await ReadExactlyAsync(stream, 9);
            var length = (header[0] << 16) | (header[1] << 8) | header[2];
            var payload = await ReadExactlyAsync(stream, length);
            var streamId = ((header[5] & 0x7f) << 24) | (header[6] << 16) | (header[7] << 8) | header[8];
            switch (header[3])
            {
                case 1 when streamId == 1:
                    status = payload[0] == 0x88 ? 200 : payload[0];
                    end = (header[4] & 1) != 0;
                    break;
                case 0 when streamId == 1:
                    body.AddRange(payload);
                    end = (header[4] & 1) != 0;
                    break;
                case 7:
                    Assert.Fail("GOAWAY: " + Encoding.ASCII.GetString(payload));
                    break;
            }
        }

        Assert.Equal(200, status);
        Assert.Equal("0123456789", Encoding.ASCII.GetString([.. body]));
        var access = _harness.Sink.AccessEvents.Last(e => CollectingSink.Scalar(e, "ConnectionId") == Id(connection));
        Assert.Equal("HTTP/2", CollectingSink.Scalar(access, "Protocol"));
    }

    [Theory]
    [InlineData(Tls13, CipherSuite.TLS_AES_256_GCM_SHA384)]
    [InlineData(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)]
    public async Task Ten_mebibytes_down_and_up_keep_their_checksums(ushort version, int suite)
    {
        using var connection = await OpenAsync(version, suite);
        var buffer = new List<byte>();
        await WriteAsync(connection.Stream, "GET /big.bin HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        var download = await HttpResponseParser.ReadAsync(connection.Stream, buffer);
        Assert.Equal(200, download.Status);
        Assert.Equal(SHA256.HashData(Big), SHA256.HashData(download.Body));

        await WriteAsync(connection.Stream, $"POST /cgi-bin/sha.sh HTTP/1.1\r\nHost: a.localhost\r\nContent-Length: {Big.Length}\r\n\r\n");
        for (var at = 0; at < Big.Length; at += 100_000)
        {
            await connection.Stream.WriteAsync(Big.AsMemory(at, Math.Min(100_000, Big.Length - at)));
        }

        await connection.Stream.FlushAsync();
        var upload = await HttpResponseParser.ReadAsync(connection.Stream, buffer);
        Assert.Equal(200, upload.Status);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Big)), upload.Text);
    }

    [Theory]
    [InlineData(Tls13, CipherSuite.TLS_AES_128_GCM_SHA256)]
    [InlineData(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)]
    public async Task Records_join_small_writes_and_split_large_ones_to_fit_16_KiB(ushort version, int suite)
    {
        using var connection = await OpenAsync(version, suite);
        using var raw = connection.Raw();
        await raw.SendTextAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("0123456789", (await raw.ReceiveResponseAsync()).Text);

        // Head and ten-byte body were written by Kestrel in one flush: one record.
        Assert.Single(raw.Records);
        raw.Records.Clear();
        await raw.SendTextAsync("GET /big.bin HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        var response = await raw.ReceiveResponseAsync();
        Assert.Equal(Big.Length, response.Body.Length);

        // Each record, header and tag included, fits a 16 KiB buffer (2^14 bytes of plaintext took the pool's 32 KiB
        // arrays in the transport's pipe), and a static file's chunk is one record, not a full one and a sliver.
        Assert.All(raw.Records, r => Assert.InRange(r.Plaintext.Length + raw.Reader.Overhead, 1, TlsRecordLayer.RecordBuffer));
        Assert.True(raw.Records.Count(r => r.Plaintext.Length == StaticFileBody.Chunk) > raw.Records.Count / 2, "most records of a large file are one chunk each");
    }

    [Theory]
    [InlineData(Tls13, CipherSuite.TLS_AES_128_GCM_SHA256)]
    [InlineData(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)]
    public async Task Ranges_of_a_large_file_read_straight_into_the_records_are_exact(ushort version, int suite)
    {
        // A static file's chunks are read into the record layer's buffers and sealed from there: a range across chunk
        // boundaries, one ending at the last byte, and the whole file after them on the same connection.
        using var connection = await OpenAsync(version, suite);
        using var raw = connection.Raw();
        foreach (var (from, to) in new[] { (StaticFileBody.Chunk - 3, (3 * StaticFileBody.Chunk) + 5), (Big.Length - 100, Big.Length - 1), (0, Big.Length - 1) })
        {
            await raw.SendTextAsync($"GET /big.bin HTTP/1.1\r\nHost: a.localhost\r\nRange: bytes={from}-{to}\r\n\r\n");
            var response = await raw.ReceiveResponseAsync();
            Assert.Equal(Big[from..(to + 1)], response.Body);
        }

        await raw.SendTextAsync("GET /big.bin HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal(SHA256.HashData(Big), SHA256.HashData((await raw.ReceiveResponseAsync()).Body));
    }

    [Fact]
    public async Task Initial_bytes_are_ciphertext_replayed_before_the_socket()
    {
        // The "dispatcher" read 3 bytes of the client's first record past the handshake: a split header.
        using var connection = await OpenAsync(
            Tls13,
            CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
            readInitial: HandedTlsConnection.ReadExactly(3),
            beforeHandOff: client => WriteAsync(client.Stream, "GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n"));
        var buffer = new List<byte>();
        Assert.Equal("0123456789", (await HttpResponseParser.ReadAsync(connection.Stream, buffer)).Text);
        await WriteAsync(connection.Stream, "GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("<h1>home</h1>", (await HttpResponseParser.ReadAsync(connection.Stream, buffer)).Text);
    }

    [Theory]
    [InlineData(Tls13)]
    [InlineData(Tls12)]
    public async Task The_client_closes_with_close_notify_and_gets_one_back(ushort version)
    {
        using var connection = await OpenAsync(version, version == Tls13 ? CipherSuite.TLS_AES_128_GCM_SHA256 : CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
        using var raw = connection.Raw();
        await raw.SendTextAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal(200, (await raw.ReceiveResponseAsync()).Status);
        await raw.SendRecordAsync(TlsContentType.Alert, [1, 0]);
        Assert.Equal((1, TlsAlertDescription.CloseNotify), await raw.ReceiveAlertThenEndAsync());
        Assert.True(await _harness.WaitForOpenConnectionsAsync(0, TimeSpan.FromSeconds(20)));
        Assert.DoesNotContain(_harness.Sink.Events, e => e.Level >= LogEventLevel.Warning);
    }

    [Fact]
    public async Task The_server_closes_with_close_notify_after_connection_close()
    {
        using var connection = await OpenAsync(Tls13, CipherSuite.TLS_AES_128_GCM_SHA256);
        using var raw = connection.Raw();
        await raw.SendTextAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n");
        Assert.Equal("0123456789", (await raw.ReceiveResponseAsync()).Text);
        Assert.Equal((1, TlsAlertDescription.CloseNotify), await raw.ReceiveAlertThenEndAsync());

        // And a real client sees the end of the stream (its library accepts the close_notify).
        using var bc = await OpenAsync(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
        var buffer = new List<byte>();
        await WriteAsync(bc.Stream, "GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n");
        Assert.Equal("0123456789", (await HttpResponseParser.ReadAsync(bc.Stream, buffer)).Text);
        Assert.True(await bc.Stream.ReadAsync(new byte[16]) <= 0);
    }

    [Theory]
    [InlineData(Tls13, CipherSuite.TLS_AES_128_GCM_SHA256)]
    [InlineData(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)]
    [InlineData(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)]
    public async Task One_flipped_bit_is_bad_record_mac_and_other_connections_go_on(ushort version, int suite)
    {
        using var other = await OpenAsync(Tls13, CipherSuite.TLS_CHACHA20_POLY1305_SHA256);
        var buffer = new List<byte>();
        await WriteAsync(other.Stream, "GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal(200, (await HttpResponseParser.ReadAsync(other.Stream, buffer)).Status);

        using var connection = await OpenAsync(version, suite);
        using var raw = connection.Raw();
        var record = raw.Seal(TlsContentType.ApplicationData, "GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n"u8);
        record[^20] ^= 0x10;
        await raw.SendAsync(record);
        Assert.Equal((2, TlsAlertDescription.BadRecordMac), await raw.ReceiveAlertThenEndAsync());
        AssertRefused(connection, TlsAlertDescription.BadRecordMac);

        // The other connection on the same worker is untouched.
        await WriteAsync(other.Stream, "GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("<h1>home</h1>", (await HttpResponseParser.ReadAsync(other.Stream, buffer)).Text);
    }

    /// <summary>
    /// A flood of handshakes each ending in a broken record: every connection is refused with its alert, but the worker's
    /// log (relayed by the master) gets the budget's burst of lines, and one line counting the rest when the worker stops.
    /// </summary>
    [Fact]
    public async Task Lines_about_broken_records_come_within_the_workers_budget_and_the_rest_are_counted()
    {
        var (harness, budget) = await Harness.StartWithLogBudgetAsync(2, Harness.Vhost("a.localhost", _dir.Combine("site")));
        await using (harness)
        {
            for (var i = 0; i < 5; i++)
            {
                using var connection = await HandedTlsConnection.OpenAsync(harness.Server, Tls13, CipherSuite.TLS_AES_128_GCM_SHA256, HandedProtocol.Http1, Interlocked.Increment(ref _nextId), null, null, null);
                using var raw = connection.Raw();
                var record = raw.Seal(TlsContentType.ApplicationData, "GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n"u8);
                record[^20] ^= 0x10;
                await raw.SendAsync(record);
                Assert.Equal((2, TlsAlertDescription.BadRecordMac), await raw.ReceiveAlertThenEndAsync());
            }

            Assert.True(SpinWait.SpinUntil(() => budget.NotLogged == 3, TimeSpan.FromSeconds(20)), $"{budget.NotLogged} lines counted, not 3");
            Assert.Equal(2, harness.Sink.Events.Count(e => e.MessageTemplate.Text.StartsWith("TLS connection {ConnectionId} refused", StringComparison.Ordinal)));
        }

        harness.AssertNotLoggedReport(3);
    }

    [Fact]
    public async Task A_real_client_receives_bad_record_mac_as_a_fatal_alert()
    {
        // A BouncyCastle client whose record reaches the worker with a flipped bit: the library reports the alert.
        using var connection = await OpenAsync(Tls13, CipherSuite.TLS_AES_256_GCM_SHA384);
        using var raw = connection.Raw();
        var record = raw.Seal(TlsContentType.ApplicationData, "GET / HTTP/1.1\r\n\r\n"u8);
        record[7] ^= 1;
        await raw.SendAsync(record);
        var alert = await Assert.ThrowsAsync<TlsFatalAlertReceived>(() => connection.Stream.ReadAsync(new byte[100]).AsTask());
        Assert.Equal(AlertDescription.bad_record_mac, alert.AlertDescription);
    }

    [Theory]
    [InlineData(Tls13, TlsRecordProtection.MaxCiphertextTls13 + 1)]
    [InlineData(Tls12, TlsRecordProtection.MaxCiphertextTls12 + 1)]
    public async Task A_record_too_long_is_record_overflow(ushort version, int length)
    {
        using var connection = await OpenAsync(version, version == Tls13 ? CipherSuite.TLS_AES_128_GCM_SHA256 : CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
        using var raw = connection.Raw();
        var record = new byte[5 + length];
        record[0] = 23;
        record[1] = 3;
        record[2] = 3;
        record[3] = (byte)(length >> 8);
        record[4] = (byte)length;
        await raw.SendAsync(record);
        Assert.Equal((2, TlsAlertDescription.RecordOverflow), await raw.ReceiveAlertThenEndAsync());
        AssertRefused(connection, TlsAlertDescription.RecordOverflow);
    }

    [Fact]
    public async Task A_record_of_2_pow_14_plus_257_bytes_is_record_overflow_even_when_authentic()
    {
        // TLS 1.3 allows 2^14 + 256 bytes of ciphertext; 2^14 + 1 bytes of plaintext sealed by hand come to 2^14 + 18
        // and must still be refused as too much plaintext, while 2^14 + 257 is refused from the header.
        using var connection = await OpenAsync(Tls13, CipherSuite.TLS_CHACHA20_POLY1305_SHA256);
        using var raw = connection.Raw();
        var record = new byte[5 + TlsRecordProtection.MaxCiphertextTls13 + 1];
        record[0] = 23;
        record[1] = 3;
        record[2] = 3;
        record[3] = (byte)((record.Length - 5) >> 8);
        record[4] = (byte)(record.Length - 5);
        Assert.Equal(16384 + 257, record.Length - 5);
        await raw.SendAsync(record);
        Assert.Equal((2, TlsAlertDescription.RecordOverflow), await raw.ReceiveAlertThenEndAsync());
    }

    [Fact]
    public async Task A_handshake_message_after_the_hand_off_is_unexpected_message()
    {
        // TLS 1.3: a protected ClientHello (type 1).
        using (var connection = await OpenAsync(Tls13, CipherSuite.TLS_AES_128_GCM_SHA256))
        using (var raw = connection.Raw())
        {
            await raw.SendRecordAsync(TlsContentType.Handshake, [1, 0, 0, 4, 3, 3, 0, 0]);
            Assert.Equal((2, TlsAlertDescription.UnexpectedMessage), await raw.ReceiveAlertThenEndAsync());
            AssertRefused(connection, TlsAlertDescription.UnexpectedMessage);
        }

        // TLS 1.3: an unprotected handshake record.
        using (var connection = await OpenAsync(Tls13, CipherSuite.TLS_AES_128_GCM_SHA256))
        using (var raw = connection.Raw())
        {
            await raw.SendAsync([22, 3, 3, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0]);
            Assert.Equal((2, TlsAlertDescription.UnexpectedMessage), await raw.ReceiveAlertThenEndAsync());
        }

        // TLS 1.2: a renegotiating ClientHello, protected as it would be.
        using (var connection = await OpenAsync(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384))
        using (var raw = connection.Raw())
        {
            await raw.SendRecordAsync(TlsContentType.Handshake, [1, 0, 0, 4, 3, 3, 0, 0]);
            Assert.Equal((2, TlsAlertDescription.UnexpectedMessage), await raw.ReceiveAlertThenEndAsync());
        }
    }

    [Theory]
    [InlineData(Tls13)]
    [InlineData(Tls12)]
    public async Task Change_cipher_spec_after_the_handshake_is_unexpected_message(ushort version)
    {
        using var connection = await OpenAsync(version, version == Tls13 ? CipherSuite.TLS_AES_128_GCM_SHA256 : CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
        using var raw = connection.Raw();
        if (version == Tls13)
        {
            await raw.SendAsync([20, 3, 3, 0, 1, 1]);
        }
        else
        {
            await raw.SendRecordAsync(TlsContentType.ChangeCipherSpec, [1]);
        }

        Assert.Equal((2, TlsAlertDescription.UnexpectedMessage), await raw.ReceiveAlertThenEndAsync());
    }

    [Fact]
    public async Task An_alert_of_unknown_level_is_illegal_parameter()
    {
        using var connection = await OpenAsync(Tls13, CipherSuite.TLS_AES_128_GCM_SHA256);
        using var raw = connection.Raw();
        await raw.SendRecordAsync(TlsContentType.Alert, [3, 0]);
        Assert.Equal((2, TlsAlertDescription.IllegalParameter), await raw.ReceiveAlertThenEndAsync());
        AssertRefused(connection, TlsAlertDescription.IllegalParameter);
    }

    [Fact]
    public async Task The_clients_fatal_alert_ends_the_connection_without_an_answer()
    {
        using var connection = await OpenAsync(Tls13, CipherSuite.TLS_AES_128_GCM_SHA256);
        using var raw = connection.Raw();
        await raw.SendRecordAsync(TlsContentType.Alert, [2, (byte)TlsAlertDescription.InternalError]);
        Assert.Null(await raw.ReceiveRecordAsync());
        Assert.True(await _harness.WaitForOpenConnectionsAsync(0, TimeSpan.FromSeconds(20)));
    }

    [Fact]
    public async Task A_truncated_record_then_the_end_closes_quietly_and_the_worker_goes_on()
    {
        using (var connection = await OpenAsync(Tls12, CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256))
        using (var raw = connection.Raw())
        {
            var record = raw.Seal(TlsContentType.ApplicationData, "GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n"u8);
            await raw.SendAsync(record[..(record.Length / 2)]);
            raw.ShutdownSend();
            Assert.Null(await raw.ReceiveRecordAsync());
            Assert.True(await _harness.WaitForOpenConnectionsAsync(0, TimeSpan.FromSeconds(20)));
            Assert.Contains(_harness.Sink.Events, e => e.MessageTemplate.Text.Contains("ended inside a record", StringComparison.Ordinal) && CollectingSink.Scalar(e, "ConnectionId") == Id(connection));
        }

        using var next = await OpenAsync(Tls13, CipherSuite.TLS_AES_128_GCM_SHA256);
        await WriteAsync(next.Stream, "GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("0123456789", (await HttpResponseParser.ReadAsync(next.Stream, [])).Text);
    }

    [Fact]
    public async Task KeyUpdate_from_the_client_with_and_without_update_requested()
    {
        using var connection = await OpenAsync(Tls13, CipherSuite.TLS_AES_256_GCM_SHA384);
        using var raw = connection.Raw();

        // update_not_requested: the client's next records are under its next key; the worker's keep theirs.
        await raw.SendRecordAsync(TlsContentType.Handshake, [24, 0, 0, 1, 0]);
        raw.Writer.UpdateKey();
        await raw.SendTextAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("0123456789", (await raw.ReceiveResponseAsync()).Text);
        Assert.DoesNotContain(raw.Records, r => r.Type == TlsContentType.Handshake);
        var serverSequence = raw.Reader.SequenceNumber;
        Assert.True(serverSequence > 0);

        // update_requested: the worker answers with its own KeyUpdate (update_not_requested), then switches keys.
        raw.Records.Clear();
        await raw.SendRecordAsync(TlsContentType.Handshake, [24, 0, 0, 1, 1]);
        raw.Writer.UpdateKey();
        await raw.SendTextAsync("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("<h1>home</h1>", (await raw.ReceiveResponseAsync()).Text);
        Assert.Equal(TlsContentType.Handshake, raw.Records[0].Type);
        Assert.Equal([24, 0, 0, 1, 0], raw.Records[0].Plaintext);

        // The response came under the updated key: its sequence numbers started again at zero.
        Assert.Equal((ulong)(raw.Records.Count - 1), raw.Reader.SequenceNumber);

        // A stray KeyUpdate value is illegal_parameter.
        await raw.SendRecordAsync(TlsContentType.Handshake, [24, 0, 0, 1, 2]);
        Assert.Equal((2, TlsAlertDescription.IllegalParameter), await raw.ReceiveAlertThenEndAsync());
    }

    [Fact]
    public async Task The_read_sequence_number_never_wraps()
    {
        // A session handed over one record before the end of its sequence numbers: that record is served, the next one
        // is refused whatever it holds.
        using var connection = await OpenAsync(
            Tls13,
            CipherSuite.TLS_AES_128_GCM_SHA256,
            alter: s => new TlsSessionState(s.Version, s.CipherSuite, s.ClientSecret, s.ServerSecret, s.ClientIv, s.ServerIv, ulong.MaxValue - 1, s.WriteSequence));
        using var raw = new RawTlsClient(
            connection.Socket,
            new TlsSessionState(connection.Keys.Version, connection.Keys.CipherSuite, connection.Keys.ClientSecret, connection.Keys.ServerSecret, [], [], ulong.MaxValue - 1, connection.Keys.WriteSequence));
        await raw.SendTextAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("0123456789", (await raw.ReceiveResponseAsync()).Text);
        await raw.SendAsync([23, 3, 3, 0, 17, .. new byte[17]]);
        Assert.Equal((2, TlsAlertDescription.InternalError), await raw.ReceiveAlertThenEndAsync());
    }

    [Fact]
    public async Task Near_the_end_of_the_read_sequence_the_worker_asks_the_client_to_update_its_key()
    {
        const ulong Late = ulong.MaxValue - (1UL << 20);
        using var connection = await OpenAsync(
            Tls13,
            CipherSuite.TLS_AES_128_GCM_SHA256,
            alter: s => new TlsSessionState(s.Version, s.CipherSuite, s.ClientSecret, s.ServerSecret, s.ClientIv, s.ServerIv, Late, s.WriteSequence));
        using var raw = new RawTlsClient(
            connection.Socket,
            new TlsSessionState(connection.Keys.Version, connection.Keys.CipherSuite, connection.Keys.ClientSecret, connection.Keys.ServerSecret, [], [], Late, connection.Keys.WriteSequence));
        await raw.SendTextAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("0123456789", (await raw.ReceiveResponseAsync()).Text);

        // KeyUpdate(update_requested) first, under the old key; the response under the worker's next key.
        Assert.Equal([24, 0, 0, 1, 1], raw.Records[0].Plaintext);
        Assert.Equal((ulong)(raw.Records.Count - 1), raw.Reader.SequenceNumber);

        // The client complies; its next request is read under its next key.
        await raw.SendRecordAsync(TlsContentType.Handshake, [24, 0, 0, 1, 0]);
        raw.Writer.UpdateKey();
        raw.Records.Clear();
        await raw.SendTextAsync("GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("<h1>home</h1>", (await raw.ReceiveResponseAsync()).Text);
        Assert.DoesNotContain(raw.Records, r => r.Type == TlsContentType.Handshake);
    }

    [Fact]
    public async Task Near_the_end_of_the_write_sequence_the_worker_updates_its_key_first()
    {
        const ulong Late = ulong.MaxValue - (1UL << 20);
        using var connection = await OpenAsync(
            Tls13,
            CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
            alter: s => new TlsSessionState(s.Version, s.CipherSuite, s.ClientSecret, s.ServerSecret, s.ClientIv, s.ServerIv, s.ReadSequence, Late));
        using var raw = new RawTlsClient(
            connection.Socket,
            new TlsSessionState(connection.Keys.Version, connection.Keys.CipherSuite, connection.Keys.ClientSecret, connection.Keys.ServerSecret, [], [], connection.Keys.ReadSequence, Late));
        await raw.SendTextAsync("GET /ten.txt HTTP/1.1\r\nHost: a.localhost\r\n\r\n");
        Assert.Equal("0123456789", (await raw.ReceiveResponseAsync()).Text);
        Assert.Equal([24, 0, 0, 1, 0], raw.Records[0].Plaintext);
        Assert.Equal((ulong)(raw.Records.Count - 1), raw.Reader.SequenceNumber);
    }

    [Fact]
    public async Task An_unsupported_suite_is_refused_with_a_log_line()
    {
        using var connection = await OpenAsync(
            Tls13,
            CipherSuite.TLS_AES_128_GCM_SHA256,
            alter: s => new TlsSessionState(s.Version, 0x1304, s.ClientSecret, s.ServerSecret, s.ClientIv, s.ServerIv, 0, 0));
        using var raw = connection.Raw();
        Assert.Null(await raw.ReceiveRecordAsync());
        AssertRefused(connection, TlsAlertDescription.InternalError);
    }

    [Fact]
    public async Task A_burst_of_records_is_opened_in_batches_that_respect_backpressure()
    {
        // 40 full records arrive in one read of the transport: the layer hands Kestrel at most 64 KiB (plus the record
        // that crossed the mark) per flush instead of opening all 640 KiB at once, and loses nothing.
        var session = new TlsSessionState(Tls13, 0x1301, Enumerable.Repeat((byte)1, 32).ToArray(), Enumerable.Repeat((byte)2, 32).ToArray(), [], [], 0, 0);
        using var client = TlsRecordProtection.CreateTls13(0x1301, Enumerable.Repeat((byte)1, 32).ToArray(), 0);
        var toServer = new System.IO.Pipelines.Pipe(new System.IO.Pipelines.PipeOptions(pauseWriterThreshold: 0));
        var toClient = new System.IO.Pipelines.Pipe();
        using var log = new Serilog.LoggerConfiguration().CreateLogger();
        var sent = new byte[40 * TlsRecordProtection.MaxPlaintext];
        new Random(3).NextBytes(sent);
        var wire = new byte[40 * client.RecordLength(TlsRecordProtection.MaxPlaintext)];
        var at = 0;
        for (var i = 0; i < 40; i++)
        {
            at += client.Encrypt(TlsContentType.ApplicationData, sent.AsSpan(i * TlsRecordProtection.MaxPlaintext, TlsRecordProtection.MaxPlaintext), wire.AsSpan(at));
        }

        await toServer.Writer.WriteAsync(wire);
        var layer = TlsRecordLayer.Start(new DuplexPipe(toServer.Reader, toClient.Writer), session, "burst", log);
        await using (layer)
        {
            var received = new List<byte>();
            var largest = 0L;
            while (received.Count < sent.Length)
            {
                var read = await layer.Input.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
                largest = Math.Max(largest, read.Buffer.Length);
                foreach (var segment in read.Buffer)
                {
                    received.AddRange(segment.Span);
                }

                layer.Input.AdvanceTo(read.Buffer.End);
            }

            Assert.Equal(sent, received);
            Assert.InRange(largest, 1, (64 * 1024) + TlsRecordProtection.MaxPlaintext);
        }
    }

    [Theory]
    [InlineData(Tls13, 0x1301)]
    [InlineData(Tls13, 0x1303)]
    [InlineData(Tls12, 0xC02F)]
    public async Task Writes_of_every_shape_come_out_as_records_of_exactly_what_was_written(ushort version, int suite)
    {
        // Records are sealed from the writer's buffers where a record's plaintext lies in one (TLS 1.3 borrowing the
        // byte after it, which may be the next record's first), and copied first where it straddles two: a buffer of
        // 40 KiB (three records in one buffer), small writes sharing a record, a buffer filled to its end, one flush
        // each, then the lot in one flush.
        var keyLength = suite == 0xC02F ? 16 : 32;
        byte[] clientKey = [.. Enumerable.Repeat((byte)1, keyLength)], serverKey = [.. Enumerable.Repeat((byte)2, keyLength)];
        byte[] clientIv = version == Tls13 ? [] : [.. Enumerable.Repeat((byte)3, 4)], serverIv = version == Tls13 ? [] : [.. Enumerable.Repeat((byte)4, 4)];
        var session = new TlsSessionState(version, (ushort)suite, clientKey, serverKey, clientIv, serverIv, 0, 0);
        using var reader = TlsRecordProtection.Create(version, (ushort)suite, serverKey, serverIv, 0);
        var toServer = new System.IO.Pipelines.Pipe();
        var toClient = new System.IO.Pipelines.Pipe(new System.IO.Pipelines.PipeOptions(pauseWriterThreshold: 0));
        using var log = new Serilog.LoggerConfiguration().CreateLogger();
        var random = new Random(7);
        var written = new List<byte>();
        var layer = TlsRecordLayer.Start(new DuplexPipe(toServer.Reader, toClient.Writer), session, "shapes", log);
        await using (layer)
        {
            void Write(int sizeHint, int length)
            {
                // What one GetMemory gives at a time (at least the hint): a hint of 1 fills what is left of a buffer.
                while (length > 0)
                {
                    var memory = layer.Output.GetMemory(sizeHint);
                    Assert.InRange(memory.Length, sizeHint, int.MaxValue);
                    var bytes = new byte[Math.Min(length, memory.Length)];
                    random.NextBytes(bytes);
                    bytes.CopyTo(memory.Span);
                    layer.Output.Advance(bytes.Length);
                    written.AddRange(bytes);
                    length -= bytes.Length;
                }
            }

            foreach (var all in new[] { false, true })
            {
                foreach (var (hint, length) in new[] { (40_000, 40_000), (1, 300), (1, 5), (StaticFileBody.Chunk, StaticFileBody.Chunk), (1, 16 * 1024), (16 * 1024, 16 * 1024) })
                {
                    Write(hint, length);
                    if (!all)
                    {
                        await layer.Output.FlushAsync();
                    }
                }

                await layer.Output.FlushAsync();
            }
        }

        var received = new List<byte>();
        var records = 0;
        while (true)
        {
            var read = await toClient.Reader.ReadAsync();
            var buffer = read.Buffer;
            while (buffer.Length >= 5)
            {
                var header = buffer.Slice(0, 5).ToArray();
                var length = 5 + ((header[3] << 8) | header[4]);
                if (buffer.Length < length)
                {
                    break;
                }

                var record = buffer.Slice(0, length).ToArray();
                var type = reader.Decrypt(record, out var range);
                buffer = buffer.Slice(length);
                if (type == TlsContentType.Alert)
                {
                    continue; // the close_notify
                }

                Assert.Equal(TlsContentType.ApplicationData, type);
                Assert.InRange(record.Length, 1, TlsRecordLayer.RecordBuffer);
                received.AddRange(record[range]);
                records++;
            }

            toClient.Reader.AdvanceTo(buffer.Start, buffer.End);
            if (read.IsCompleted)
            {
                break;
            }
        }

        Assert.Equal(written.Count, received.Count);
        Assert.True(written.SequenceEqual(received), "the records carry exactly what was written, in order");
        output.WriteLine($"{written.Count} bytes in {records} records");
    }

    private async Task<HandedTlsConnection> OpenAsync(
        ushort version,
        int suite,
        HandedProtocol protocol = HandedProtocol.Http1,
        Func<System.Net.Sockets.Socket, Task<byte[]>>? readInitial = null,
        Func<TlsSessionState, TlsSessionState>? alter = null,
        Func<TlsClientProtocol, Task>? beforeHandOff = null) =>
        await HandedTlsConnection.OpenAsync(_harness.Server, version, suite, protocol, Interlocked.Increment(ref _nextId), readInitial, alter, beforeHandOff);

    private static string Id(HandedTlsConnection connection) => connection.Info.ConnectionId.ToString(System.Globalization.CultureInfo.InvariantCulture);

    private static async Task<byte[]> ReadExactlyAsync(Stream stream, int count)
    {
        var buffer = new byte[count];
        var read = 0;
        while (read < count)
        {
            var n = await stream.ReadAsync(buffer.AsMemory(read));
            if (n <= 0)
            {
                throw new IOException("the stream ended inside a frame");
            }

            read += n;
        }

        return buffer;
    }

    /// <summary>One log line for the refused connection: its id, the alert and a reason.</summary>
    private void AssertRefused(HandedTlsConnection connection, TlsAlertDescription alert)
    {
        var refused = _harness.Sink.Events.Where(e => e.MessageTemplate.Text.Contains("refused", StringComparison.Ordinal) && CollectingSink.Scalar(e, "ConnectionId") == Id(connection)).ToList();
        var line = Assert.Single(refused);
        Assert.Equal(TlsAlertNames.Name(alert), CollectingSink.Scalar(line, "Alert"));
        Assert.False(string.IsNullOrEmpty(CollectingSink.Scalar(line, "Reason")));
        output.WriteLine(line.RenderMessage());

        // That line alone: Kestrel adds no warning or error of its own about the connection.
        Assert.All(_harness.Sink.Events.Where(e => e.Level >= LogEventLevel.Warning), e => Assert.Contains("refused", e.MessageTemplate.Text, StringComparison.Ordinal));
    }

    private sealed class DuplexPipe(System.IO.Pipelines.PipeReader input, System.IO.Pipelines.PipeWriter output) : System.IO.Pipelines.IDuplexPipe
    {
        public System.IO.Pipelines.PipeReader Input { get; } = input;

        public System.IO.Pipelines.PipeWriter Output { get; } = output;
    }

    private static async Task WriteAsync(Stream stream, string text)
    {
        await stream.WriteAsync(Encoding.ASCII.GetBytes(text));
        await stream.FlushAsync();
    }

    private static byte[] CreateBig()
    {
        var big = new byte[10 << 20];
        new Random(7).NextBytes(big);
        return big;
    }
}
