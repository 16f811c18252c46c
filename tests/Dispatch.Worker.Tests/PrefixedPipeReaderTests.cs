using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Dispatch.Worker.Http;

namespace Dispatch.Worker.Tests;

public sealed class PrefixedPipeReaderTests
{
    private static string Text(ReadOnlySequence<byte> buffer) => Encoding.ASCII.GetString(buffer.ToArray());

    private static async Task WriteAsync(Pipe pipe, string text)
    {
        await pipe.Writer.WriteAsync(Encoding.ASCII.GetBytes(text));
    }

    private static (PrefixedPipeReader Reader, Pipe Inner) Create(string prefix)
    {
        var inner = new Pipe();
        return (new PrefixedPipeReader(Encoding.ASCII.GetBytes(prefix), inner.Reader), inner);
    }

    [Fact]
    public async Task Yields_prefix_without_waiting_then_socket_data()
    {
        var (reader, inner) = Create("Hello ");
        var first = await reader.ReadAsync();
        Assert.Equal("Hello ", Text(first.Buffer));
        Assert.False(first.IsCompleted);
        reader.AdvanceTo(first.Buffer.End);

        var pending = reader.ReadAsync();
        Assert.False(pending.IsCompleted);
        await WriteAsync(inner, "World");
        var second = await pending;
        Assert.Equal("World", Text(second.Buffer));
        reader.AdvanceTo(second.Buffer.End);
        Assert.Equal(0, reader.RemainingPrefixLength);
    }

    [Fact]
    public async Task Head_split_between_prefix_and_socket_is_parsed_across_the_boundary()
    {
        var (reader, inner) = Create("GET / HTTP/1.1\r\nHost: a\r");
        var first = await reader.ReadAsync();
        Assert.Null(FindHeadEnd(first.Buffer));

        // Parser: nothing consumed, everything examined: the next read must wait for the socket.
        reader.AdvanceTo(first.Buffer.Start, first.Buffer.End);
        var pending = reader.ReadAsync();
        await Task.Delay(50);
        Assert.False(pending.IsCompleted);

        await WriteAsync(inner, "\n\r\nBODY");
        var second = await pending;
        Assert.False(second.Buffer.IsSingleSegment);
        Assert.Equal("GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY", Text(second.Buffer));
        var headEnd = FindHeadEnd(second.Buffer);
        Assert.NotNull(headEnd);
        reader.AdvanceTo(headEnd.Value, headEnd.Value);

        // The rest ("BODY") comes from the socket, unexamined: available at once.
        var third = await reader.ReadAsync();
        Assert.Equal("BODY", Text(third.Buffer));
        reader.AdvanceTo(third.Buffer.End);
        Assert.Equal(0, reader.RemainingPrefixLength);
    }

    [Fact]
    public async Task Pipelined_requests_in_the_prefix_are_returned_without_touching_the_socket()
    {
        var (reader, _) = Create("AAAA|BBBB|CC");
        var result = await reader.ReadAsync();
        var firstEnd = result.Buffer.GetPosition(5);
        reader.AdvanceTo(firstEnd, firstEnd);

        var next = reader.ReadAsync();
        Assert.True(next.IsCompleted);
        var r2 = await next;
        Assert.Equal("BBBB|CC", Text(r2.Buffer));
        var secondEnd = r2.Buffer.GetPosition(5);
        reader.AdvanceTo(secondEnd, r2.Buffer.End);

        // "CC" examined entirely: now the socket must provide more.
        var pending = reader.ReadAsync();
        Assert.False(pending.IsCompleted);
        reader.CancelPendingRead();
        var canceled = await pending;
        Assert.True(canceled.IsCanceled);
        reader.AdvanceTo(canceled.Buffer.Start);
    }

    [Fact]
    public async Task Consuming_into_the_socket_part_maps_positions_back_to_the_inner_pipe()
    {
        var (reader, inner) = Create("abc");
        var r = await reader.ReadAsync();
        reader.AdvanceTo(r.Buffer.Start, r.Buffer.End);
        await WriteAsync(inner, "defgh");
        r = await reader.ReadAsync();
        Assert.Equal("abcdefgh", Text(r.Buffer));

        // Consume "abcdef", examine all: the next read waits for new data and then returns "gh" + new.
        reader.AdvanceTo(r.Buffer.GetPosition(6), r.Buffer.End);
        var pending = reader.ReadAsync();
        Assert.False(pending.IsCompleted);
        await WriteAsync(inner, "ij");
        r = await pending;
        Assert.Equal("ghij", Text(r.Buffer));
        reader.AdvanceTo(r.Buffer.End);
    }

    [Fact]
    public async Task Examined_inside_the_socket_part_returns_at_once()
    {
        var (reader, inner) = Create("abc");
        var r = await reader.ReadAsync();
        reader.AdvanceTo(r.Buffer.Start, r.Buffer.End);
        await WriteAsync(inner, "def");
        r = await reader.ReadAsync();

        // Consume "a", examine up to "d": "ef" is unexamined.
        reader.AdvanceTo(r.Buffer.GetPosition(1), r.Buffer.GetPosition(4));
        var next = reader.ReadAsync();
        Assert.True(next.IsCompleted);
        r = await next;
        Assert.Equal("bcdef", Text(r.Buffer));
        reader.AdvanceTo(r.Buffer.End);
        Assert.Equal(0, reader.RemainingPrefixLength);
    }

    [Fact]
    public async Task Examined_inside_the_prefix_after_a_combined_read_does_not_wait_for_the_socket()
    {
        var (reader, inner) = Create("abc");
        var r = await reader.ReadAsync();
        reader.AdvanceTo(r.Buffer.Start, r.Buffer.End);
        await WriteAsync(inner, "d");
        r = await reader.ReadAsync();

        // Consume "a", examine only "ab": "c" (prefix) and "d" (socket) are unexamined.
        reader.AdvanceTo(r.Buffer.GetPosition(1), r.Buffer.GetPosition(2));
        var next = reader.ReadAsync();
        Assert.True(next.IsCompleted);
        r = await next;
        Assert.StartsWith("bc", Text(r.Buffer), StringComparison.Ordinal);
        reader.AdvanceTo(r.Buffer.End);
    }

    [Fact]
    public async Task Body_partly_in_the_prefix_is_read_exactly_and_the_next_request_follows()
    {
        // Head + 4 bytes of a 10-byte body in the prefix; 6 more body bytes and a second request on the socket.
        var (reader, inner) = Create("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123");
        var r = await reader.ReadAsync();
        var headEnd = FindHeadEnd(r.Buffer)!.Value;
        reader.AdvanceTo(headEnd, headEnd);

        await WriteAsync(inner, "456789GET /next");
        var body = new List<byte>();
        while (body.Count < 10)
        {
            r = await reader.ReadAsync();
            var take = r.Buffer.Slice(0, Math.Min(10 - body.Count, r.Buffer.Length));
            body.AddRange(take.ToArray());
            reader.AdvanceTo(take.End);
        }

        Assert.Equal("0123456789", Encoding.ASCII.GetString([.. body]));
        r = await reader.ReadAsync();
        Assert.Equal("GET /next", Text(r.Buffer));
        reader.AdvanceTo(r.Buffer.End);
    }

    [Fact]
    public async Task CancelPendingRead_before_a_prefix_read_cancels_that_read_once()
    {
        var (reader, _) = Create("xyz");
        reader.CancelPendingRead();
        var r = await reader.ReadAsync();
        Assert.True(r.IsCanceled);
        Assert.Equal("xyz", Text(r.Buffer));
        reader.AdvanceTo(r.Buffer.Start);

        r = await reader.ReadAsync();
        Assert.False(r.IsCanceled);
        reader.AdvanceTo(r.Buffer.Start);
    }

    [Fact]
    public async Task CancelPendingRead_interrupts_a_read_waiting_for_the_socket()
    {
        var (reader, inner) = Create("xyz");
        var r = await reader.ReadAsync();
        reader.AdvanceTo(r.Buffer.Start, r.Buffer.End);
        var pending = reader.ReadAsync();
        await Task.Delay(20);
        reader.CancelPendingRead();
        r = await pending;
        Assert.True(r.IsCanceled);
        Assert.Equal("xyz", Text(r.Buffer));
        reader.AdvanceTo(r.Buffer.Start, r.Buffer.End);

        await WriteAsync(inner, "!");
        r = await reader.ReadAsync();
        Assert.False(r.IsCanceled);
        Assert.Equal("xyz!", Text(r.Buffer));
        reader.AdvanceTo(r.Buffer.End);
    }

    [Fact]
    public async Task Completion_of_the_socket_is_reported_after_the_prefix()
    {
        var (reader, inner) = Create("tail");
        await inner.Writer.CompleteAsync();
        var r = await reader.ReadAsync();
        Assert.False(r.IsCompleted);
        reader.AdvanceTo(r.Buffer.Start, r.Buffer.End);
        r = await reader.ReadAsync();
        Assert.True(r.IsCompleted);
        Assert.Equal("tail", Text(r.Buffer));
        reader.AdvanceTo(r.Buffer.End);
        r = await reader.ReadAsync();
        Assert.True(r.IsCompleted);
        Assert.True(r.Buffer.IsEmpty);
        reader.AdvanceTo(r.Buffer.End);
    }

    [Fact]
    public async Task TryRead_follows_the_same_rules()
    {
        var (reader, inner) = Create("ab");
        Assert.True(reader.TryRead(out var r));
        Assert.Equal("ab", Text(r.Buffer));
        reader.AdvanceTo(r.Buffer.Start, r.Buffer.End);

        Assert.False(reader.TryRead(out _));
        await WriteAsync(inner, "c");
        Assert.True(reader.TryRead(out r));
        Assert.Equal("abc", Text(r.Buffer));
        reader.AdvanceTo(r.Buffer.End);
        Assert.False(reader.TryRead(out _));
    }

    [Fact]
    public async Task Complete_completes_the_inner_reader()
    {
        var (reader, inner) = Create("ab");
        await reader.CompleteAsync();
        var flush = await inner.Writer.WriteAsync(new byte[] { 1 });
        Assert.True(flush.IsCompleted);
    }

    [Fact]
    public void AdvanceTo_without_a_read_throws()
    {
        var (reader, _) = Create("ab");
        Assert.Throws<InvalidOperationException>(() => reader.AdvanceTo(default));
    }

    [Fact]
    public async Task Empty_prefix_is_a_pure_pass_through()
    {
        var inner = new Pipe();
        var reader = new PrefixedPipeReader(ReadOnlyMemory<byte>.Empty, inner.Reader);
        await WriteAsync(inner, "data");
        var r = await reader.ReadAsync();
        Assert.Equal("data", Text(r.Buffer));
        reader.AdvanceTo(r.Buffer.End);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    public async Task Random_consumers_see_exactly_the_prefix_followed_by_the_socket_data(int seed)
    {
        var random = new Random(seed);
        var data = new byte[random.Next(1, 4000)];
        random.NextBytes(data);
        var prefixLength = random.Next(1, data.Length + 1);
        var inner = new Pipe(new PipeOptions(minimumSegmentSize: 16, pauseWriterThreshold: 0, useSynchronizationContext: false));
        var reader = new PrefixedPipeReader(data.AsMemory(0, prefixLength), inner.Reader);

        var writer = Task.Run(async () =>
        {
            var writeRandom = new Random(seed + 1000);
            var offset = prefixLength;
            while (offset < data.Length)
            {
                var n = Math.Min(writeRandom.Next(1, 200), data.Length - offset);
                await inner.Writer.WriteAsync(data.AsMemory(offset, n));
                offset += n;
                if (writeRandom.Next(4) == 0)
                {
                    await Task.Yield();
                }
            }

            await inner.Writer.CompleteAsync();
        });

        var received = new List<byte>();
        while (true)
        {
            ReadResult r;
            if (random.Next(3) == 0 && reader.TryRead(out var tried))
            {
                r = tried;
            }
            else
            {
                r = await reader.ReadAsync();
            }

            var buffer = r.Buffer;
            var consume = buffer.Length == 0 ? 0 : random.Next(0, (int)buffer.Length + 1);
            var examine = random.Next(2) == 0 ? buffer.Length : random.Next(consume, (int)buffer.Length + 1);
            if (r.IsCompleted)
            {
                consume = (int)buffer.Length;
                examine = buffer.Length;
            }

            received.AddRange(buffer.Slice(0, consume).ToArray());
            reader.AdvanceTo(buffer.GetPosition(consume), buffer.GetPosition(examine));
            if (r.IsCompleted)
            {
                break;
            }
        }

        await writer;
        Assert.Equal(data, received.ToArray());
    }

    private static SequencePosition? FindHeadEnd(ReadOnlySequence<byte> buffer)
    {
        var sequenceReader = new SequenceReader<byte>(buffer);
        return sequenceReader.TryReadTo(out ReadOnlySequence<byte> _, "\r\n\r\n"u8, advancePastDelimiter: true)
            ? sequenceReader.Position
            : null;
    }
}
