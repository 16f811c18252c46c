using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.StaticFiles;

namespace Dispatch.Worker.Http;

/// <summary>
/// How a static file's body is sent: from the confined descriptor into the response's <see cref="PipeWriter"/> in
/// writes of <see cref="Chunk"/> bytes, each flushed before the next is read, so that a client that does not read
/// (a stalled reader) holds no buffer of ours while its write waits — only what the connection's output pipe holds.
/// </summary>
/// <remarks>
/// <para>ASP.NET Core's StaticFiles sends a file that has no physical path through <c>StreamCopyOperation</c>, a
/// 64 KiB array rented for the whole response and held across the write that waits for the client: with thousands of
/// stalled readers, that was most of the worker's ~200 KiB per reader (docs/floods.md). A file with a physical path
/// goes to <see cref="IHttpResponseBodyFeature.SendFileAsync"/> instead. So a <see cref="ConfinedFileInfo"/> gives a
/// <see cref="ConfinedFileInfo.PhysicalPath"/> that is no path at all (it starts with NUL: anything that tried to open
/// it would fail, never open something else), and StaticFiles' <c>OnPrepareResponse</c> (<see cref="PrepareResponse"/>)
/// puts this feature above the response's body feature (above response compression too), so that the token comes back
/// here and the file is read from the descriptor the confined open gave (the open-file cache's, or its own) — never
/// opened again by name.</para>
/// <para>Each chunk is read (pread) into an array rented from the shared pool, copied into the writer and the array
/// given back before the flush is awaited. Over a handed TLS session (HTTP/1) the chunk is read straight into the record
/// layer's buffer instead, and sealed into its record from there: no array and no copy in the worker, the buffer held
/// while the flush waits the same. HTTP/2 reads it straight into the stream's pipe (Kestrel then copies it into DATA
/// frames). Range requests arrive as an offset and a count, as before. After a flush
/// that waited for the client, while the thread pool is congested, the copy goes on on the <see cref="BulkLane"/>.</para>
/// <para>On a plain HTTP/1 connection whose output is the socket itself (<see cref="DirectSocketWriter"/>) and with
/// nothing but the access log's count between here and Kestrel (no response compression), the body goes by
/// <c>sendfile(2)</c> instead (<see cref="SendDirectAsync"/>): no buffer and no copy in the worker, and a stalled reader
/// holds only the kernel's socket buffer, as with nginx (docs/floods.md). TLS, HTTP/2 and compressed responses are
/// copied as above.</para>
/// </remarks>
internal sealed class StaticFileBody(IHttpResponseBodyFeature inner, ConfinedFileInfo file, bool http2, CancellationToken requestAborted, DirectSocketWriter? direct = null, bool readIntoWriter = false) : IHttpResponseBodyFeature
{
    /// <summary>The most one <c>sendfile</c> sends before Kestrel is told (the access log's count, Content-Length).</summary>
    internal const int DirectChunk = 1 << 20;

    /// <summary>
    /// Bytes read and written at once: what a blocked flush can hold beyond the output pipe's own threshold. Just under
    /// 16 KiB, so that over TLS a chunk is one record that fits one 16 KiB buffer (<see cref="Tls.TlsRecordLayer.RecordPlaintext"/>).
    /// </summary>
    internal const int Chunk = Tls.TlsRecordLayer.RecordPlaintext;

    public Stream Stream => inner.Stream;

    public PipeWriter Writer => inner.Writer;

    /// <summary>StaticFiles' <c>OnPrepareResponse</c>: a precompressed sibling's headers, then this feature for a GET.</summary>
    public static void PrepareResponse(StaticFileResponseContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        PrecompressedMiddleware.PrepareResponse(context);
        var http = context.Context;
        if (context.File is ConfinedFileInfo confined && !HttpMethods.IsHead(http.Request.Method))
        {
            var body = http.Features.GetRequiredFeature<IHttpResponseBodyFeature>();
            // sendfile only when nothing but the access log's count lies between here and Kestrel (no compression).
            var direct = body is CountingResponseBody ? http.Features.Get<SendTimeoutPipeWriter>()?.Direct : null;
            var http2 = HttpProtocol.IsHttp2(http.Request.Protocol);
            // Nothing but the count in between, and a writer whose buffers take a whole chunk from the transport's
            // pool: HTTP/1 over a handed TLS session (the record layer's, each chunk then sealed into a record from
            // where it was read), and HTTP/2 (the stream's pipe: one 16 KiB block of TransportBlockPool).
            // (Plain HTTP/1's output is the socket itself, `direct`: no TLS session to look for.)
            var readIntoWriter = body is CountingResponseBody
                && (http2 || (direct is null && http.Features.Get<IHandedConnectionFeature>()?.Info.Session is not null));
            http.Features.Set<IHttpResponseBodyFeature>(new StaticFileBody(
                body, confined, http2, http.RequestAborted, direct, readIntoWriter));
        }
    }

    public void DisableBuffering() => inner.DisableBuffering();

    public Task StartAsync(CancellationToken cancellationToken = default) => inner.StartAsync(cancellationToken);

    public Task CompleteAsync() => inner.CompleteAsync();

    public Task SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken = default) =>
        string.Equals(path, file.PhysicalPath, StringComparison.Ordinal)
            ? CopyAsync(file, inner.Writer, offset, count, cancellationToken, endsWithConnection: !http2 && cancellationToken == requestAborted, direct, readIntoWriter)
            : inner.SendFileAsync(path, offset, count, cancellationToken);

    /// <summary>Writes <paramref name="count"/> bytes (to the end when null) of <paramref name="source"/> from
    /// <paramref name="offset"/> into <paramref name="writer"/>, <see cref="Chunk"/> bytes per flush.</summary>
    /// <param name="endsWithConnection">
    /// <paramref name="cancellationToken"/> is an HTTP/1.x request's RequestAborted: it fires only when the connection is
    /// aborted (the client reset it or left mid-response, the send timeout, a stop), and an abort always ends a waiting
    /// flush itself — the transport's output is completed, and the flush reports it (<see cref="FlushResult.IsCompleted"/>).
    /// So the flushes are not given the token, and a request found aborted ends the copy quietly, as the end of the output
    /// does: no <see cref="OperationCanceledException"/> is thrown, rethrown by each awaiting frame (Kestrel's flushers,
    /// ours, SendFileAsync's) and caught by StaticFiles, for every client that leaves mid-response (a flood of stalled
    /// readers that close is thousands of them; docs/operations.md, "Where the CPU goes"). Kestrel checks no
    /// Content-Length on an aborted connection, and the access log counts the same bytes (<see cref="CountingResponseBody"/>:
    /// nothing after the abort). Otherwise (HTTP/2, where a stream's abort is not the connection's, or another token) the
    /// token cancels the flush and the copy throws, as before.
    /// </param>
    /// <param name="direct">The connection's output when it is the socket itself: the body goes by <c>sendfile</c> (<see cref="SendDirectAsync"/>).</param>
    /// <param name="readIntoWriter">
    /// Read each chunk straight into the writer's memory when it gives a whole chunk at once (the TLS record layer's
    /// writer and an HTTP/2 stream's pipe do): no array rented, no copy. Otherwise, and for other writers (compression,
    /// plain HTTP/1's small files), the chunk is read into a rented array and copied in blocks of 4 KiB, which every
    /// writer takes.
    /// </param>
    internal static async Task CopyAsync(ConfinedFileInfo source, PipeWriter writer, long offset, long? count, CancellationToken cancellationToken, bool endsWithConnection = false, DirectSocketWriter? direct = null, bool readIntoWriter = false)
    {
        await using var stream = source.CreateReadStream();
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (offset > stream.Length || (count is { } c && (c < 0 || c > stream.Length - offset)))
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"The range {offset}+{count} lies beyond the file's {stream.Length} bytes.");
        }

        var remaining = count ?? (stream.Length - offset);
        var flushToken = endsWithConnection ? CancellationToken.None : cancellationToken;
        // A small body is copied after the head, as below: one send for both (sendfile would cost a second send and a
        // second packet: 1.27x -> 1.62x nginx's CPU per 1 KiB request).
        if (direct is not null && stream is FileReadStream file && remaining > Chunk)
        {
            await SendDirectAsync(file, writer, direct, offset, remaining, endsWithConnection, cancellationToken, flushToken).ConfigureAwait(false);
            return;
        }

        stream.Seek(offset, SeekOrigin.Begin);
        while (remaining > 0)
        {
            if (endsWithConnection && cancellationToken.IsCancellationRequested)
            {
                return;
            }

            cancellationToken.ThrowIfCancellationRequested();
            var want = (int)Math.Min(Chunk, remaining);
            int read;
            var into = readIntoWriter ? writer.GetMemory(want) : default;
            if (into.Length >= want)
            {
                read = stream.Read(into.Span[..want]);
                writer.Advance(Math.Max(read, 0));
            }
            else
            {
                read = CopyThroughArray(stream, writer, want);
            }

            if (read <= 0)
            {
                // The file shrank since its length was sent: as StreamCopyOperation, stop (Kestrel then ends the
                // response as too short).
                return;
            }

            remaining -= read;
            var flush = writer.FlushAsync(flushToken);
            var waited = !flush.IsCompleted;
            if (Ended(await flush.ConfigureAwait(false), endsWithConnection, cancellationToken))
            {
                return;
            }

            if (waited && remaining > 0 && BulkLane.IsCongested())
            {
                // The client took what was sent, but the pool is congested: the next records are made on the bulk lane,
                // behind no new connection's setup (BulkLane).
                await BulkLane.Yield();
            }
        }
    }

    // Reads up to `want` bytes into an array rented from the shared pool and copies them into the writer; returns what was read.
    private static int CopyThroughArray(Stream stream, PipeWriter writer, int want)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(Chunk);
        try
        {
            var read = stream.Read(buffer, 0, want);
            // Copied block by block with an explicit size hint: the writer guarantees that much room (Kestrel's
            // writer may answer an empty span to a hint of 0, which BuffersExtensions.Write does not survive).
            var left = buffer.AsSpan(0, Math.Max(read, 0));
            while (!left.IsEmpty)
            {
                var room = writer.GetSpan(Math.Min(left.Length, 4096));
                var n = Math.Min(room.Length, left.Length);
                left[..n].CopyTo(room);
                writer.Advance(n);
                left = left[n..];
            }

            return read;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// The body from the file's descriptor to the socket with <c>sendfile</c> (<see cref="DirectSocketWriter"/>): no
    /// buffer, no copy in the worker. The head goes first (the first flush starts the response); after each
    /// <see cref="DirectChunk"/> sent, Kestrel is given as many placeholder bytes (it counts them against the
    /// Content-Length, the access log counts them; they are not sent). Ends as <see cref="CopyAsync"/> does: quietly when
    /// the output ended or the connection was aborted, short when the file shrank (Kestrel then ends the response).
    /// </summary>
    private static async Task SendDirectAsync(FileReadStream file, PipeWriter writer, DirectSocketWriter direct, long offset, long remaining, bool endsWithConnection, CancellationToken cancellationToken, CancellationToken flushToken)
    {
        var started = await writer.FlushAsync(flushToken).ConfigureAwait(false);
        if (Ended(started, endsWithConnection, cancellationToken))
        {
            return;
        }

        while (remaining > 0)
        {
            if (endsWithConnection && cancellationToken.IsCancellationRequested)
            {
                return;
            }

            cancellationToken.ThrowIfCancellationRequested();
            var asked = Math.Min(remaining, DirectChunk);
            var sent = await direct.SendFileAsync(file.Handle, offset, asked, flushToken).ConfigureAwait(false);
            if (sent > 0)
            {
                direct.AddPlaceholders(sent);
                for (var left = sent; left > 0;)
                {
                    var step = (int)Math.Min(left, DirectSocketWriter.MaxPlaceholder);
                    writer.GetSpan(step);
                    writer.Advance(step);
                    left -= step;
                }

                offset += sent;
                remaining -= sent;
                if (Ended(await writer.FlushAsync(flushToken).ConfigureAwait(false), endsWithConnection, cancellationToken))
                {
                    return;
                }
            }

            if (sent < asked)
            {
                // The output ended (the client is gone), the token fired, or the file shrank since its length was
                // sent (Kestrel then ends the response as too short).
                cancellationToken.ThrowIfCancellationRequested();
                return;
            }
        }
    }

    /// <summary>
    /// Whether a flush says the copy is over: the connection's output ended (the client is gone), or the request was
    /// aborted (<paramref name="endsWithConnection"/>). A flush canceled otherwise throws.
    /// </summary>
    private static bool Ended(FlushResult flushed, bool endsWithConnection, CancellationToken cancellationToken)
    {
        if (flushed.IsCanceled && !(endsWithConnection && cancellationToken.IsCancellationRequested))
        {
            throw new OperationCanceledException("The response's flush was canceled.", cancellationToken);
        }

        return flushed.IsCompleted || flushed.IsCanceled;
    }
}
