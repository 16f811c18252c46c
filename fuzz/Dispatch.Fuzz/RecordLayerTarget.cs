using System.Buffers.Binary;
using System.IO.Pipelines;
using Dispatch.Wire.Tls;
using Dispatch.Worker.Tls;
using Microsoft.AspNetCore.Connections;
using Serilog;

namespace Dispatch.Fuzz;

/// <summary>
/// The worker's TLS record layer (TlsRecordLayer over TlsRecordProtection) after a valid hand-off, fed what a hostile
/// client sends: a fixed session state of one of five suites, then a script of records, most sealed with the client's
/// real keys (so the fuzzer reaches what lies behind the MAC: inner types, alerts, KeyUpdates, padding), some raw. The
/// layer runs over in-memory pipes exactly as over Kestrel's transport. Documented: the connection ends with plaintext
/// delivered, with a TLS alert sent (TlsAlertException inside), or as a ConnectionAbortedException/IOException to the
/// reader; never a bug logged by the layer's catch-all, another exception, or a hang.
/// </summary>
/// <remarks>
/// Input: byte 0 picks the suite (<see cref="Suites"/>); then operations, each one byte <c>op</c>:
/// <c>op &amp; 3</c> = 0: seal the next <c>u16</c>-length-prefixed bytes as one record of the content type <c>op &gt;&gt; 2</c>
/// (0 application_data, 1 alert, 2 handshake, 3 change_cipher_spec, else that value); 1: append the next
/// length-prefixed bytes raw; 2: the client moves to its next traffic secret (after sending a KeyUpdate; TLS 1.3);
/// 3: as 0, with the record's last byte flipped (a bad MAC).
/// </remarks>
internal sealed class RecordLayerTarget : IFuzzTarget
{
    /// <summary>(version, suite, secret or key length, IV length).</summary>
    public static readonly (ushort Version, ushort Suite, int Secret, int Iv)[] Suites =
    [
        (TlsSessionState.Tls13, 0x1301, 32, 0),
        (TlsSessionState.Tls13, 0x1302, 48, 0),
        (TlsSessionState.Tls13, 0x1303, 32, 0),
        (TlsSessionState.Tls12, 0xC02F, 16, 4),
        (TlsSessionState.Tls12, 0xCCA8, 32, 12),
    ];

    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);
    private readonly CapturingSink _sink = new();
    private readonly ILogger _log;

    public RecordLayerTarget() =>
        _log = new LoggerConfiguration().MinimumLevel.Verbose().WriteTo.Sink(_sink).CreateLogger();

    public string Name => "recordlayer";

    public string Description => "the worker's TlsRecordLayer (TlsRecordProtection.Decrypt) on client records after a valid hand-off";

    /// <summary>The client's sealed records and raw bytes the script in <paramref name="data"/> describes.</summary>
    public static byte[] Ciphertext(ReadOnlySpan<byte> data, out TlsSessionState session)
    {
        var (version, suite, secretLength, ivLength) = Suites[data.IsEmpty ? 0 : data[0] % Suites.Length];
        session = new TlsSessionState(version, suite, Fill(secretLength, 0x11), Fill(secretLength, 0x77), Fill(ivLength, 0x33), Fill(ivLength, 0x99), 0, 0);
        using var client = TlsRecordProtection.Create(version, suite, session.ClientSecret, session.ClientIv, 0);
        var output = new List<byte>();
        var record = new byte[TlsRecordProtection.MaxRecord];
        var p = data.IsEmpty ? 0 : 1;
        while (p < data.Length)
        {
            var op = data[p++];
            if ((op & 3) == 2)
            {
                if (version == TlsSessionState.Tls13)
                    client.UpdateKey();
                continue;
            }

            var length = p + 2 <= data.Length ? BinaryPrimitives.ReadUInt16BigEndian(data[p..]) : 0;
            p = Math.Min(data.Length, p + 2);
            var bytes = data.Slice(p, Math.Min(length, data.Length - p));
            p += bytes.Length;
            if ((op & 3) == 1)
            {
                output.AddRange(bytes);
                continue;
            }

            var type = (op >> 2) switch
            {
                0 => TlsContentType.ApplicationData,
                1 => TlsContentType.Alert,
                2 => TlsContentType.Handshake,
                3 => TlsContentType.ChangeCipherSpec,
                var other => (TlsContentType)other,
            };
            var plaintext = bytes[..Math.Min(bytes.Length, TlsRecordProtection.MaxPlaintext)];
            if (client.SequenceNumber == ulong.MaxValue)
                break;
            var n = client.Encrypt(type, plaintext, record);
            if ((op & 3) == 3)
                record[n - 1] ^= 0x80;
            output.AddRange(record.AsSpan(0, n));
        }

        return [.. output];
    }

    public void Run(ReadOnlySpan<byte> data)
    {
        var ciphertext = Ciphertext(data, out var session);
        _sink.Clear();
        var run = RunAsync(ciphertext, session);
        if (Task.WaitAny([run], Bound) < 0)
            throw new FuzzFindingException($"the record layer did not finish within {Bound.TotalSeconds} s");
        run.GetAwaiter().GetResult();
        if (_sink.Bug is { } bug)
            throw new FuzzFindingException($"the record layer logged a bug: {bug.RenderMessage()}", bug.Exception!);
    }

    private async Task RunAsync(byte[] ciphertext, TlsSessionState session)
    {
        var fromClient = new Pipe();
        var toClient = new Pipe();
        var layer = TlsRecordLayer.Start(new Duplex(fromClient.Reader, toClient.Writer), session, "fuzz", _log);
        var send = Task.Run(async () =>
        {
            await fromClient.Writer.WriteAsync(ciphertext);
            await fromClient.Writer.CompleteAsync();
        });
        var drain = Task.Run(async () =>
        {
            while (true)
            {
                var r = await toClient.Reader.ReadAsync();
                toClient.Reader.AdvanceTo(r.Buffer.End);
                if (r.IsCompleted || r.IsCanceled)
                    break;
            }

            await toClient.Reader.CompleteAsync();
        });
        try
        {
            while (true)
            {
                var r = await layer.Input.ReadAsync();
                layer.Input.AdvanceTo(r.Buffer.End);
                if (r.IsCompleted || r.IsCanceled)
                    break;
            }
        }
        catch (Exception e) when (e is ConnectionAbortedException or IOException)
        {
            // How the layer ends a connection it refused (after sending its alert) or one that ended inside a record.
        }

        await layer.DisposeAsync();
        await send;
        await drain;
    }

    private static byte[] Fill(int length, byte seed)
    {
        var b = new byte[length];
        for (var i = 0; i < length; i++)
            b[i] = (byte)(seed + i);
        return b;
    }

    private sealed class Duplex(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;

        public PipeWriter Output => output;
    }
}
