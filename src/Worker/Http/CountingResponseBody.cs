using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Dispatch.Worker.Http;

/// <summary>
/// The response body as the access log counts it: installed under every handler (static files, CGI, FastCGI, the
/// proxy, compression above it), it counts the body bytes that reached the connection, whatever the framing
/// (Content-Length or chunked). A write or flush counts once it completed while the request was not aborted and the
/// connection's socket still took bytes (<see cref="SendTimeoutPipeWriter.OutputEnded"/>: once the client is gone,
/// Kestrel's writes still complete, into nothing); bytes still buffered when the handler returns count if the response
/// completes (Kestrel sends them as it ends the response), not if the connection was aborted. So a streamed response
/// logs what was sent and an aborted one what was sent before the abort (at most the connection's output pipe and the
/// kernel's send buffer more than the client received).
/// </summary>
internal sealed class CountingResponseBody : IHttpResponseBodyFeature
{
    private readonly IHttpResponseBodyFeature _inner;
    private readonly CancellationToken _aborted;
    private readonly SendTimeoutPipeWriter? _transport;
    private long _sent;
    private long _pending;
    private CountingStream? _stream;
    private CountingWriter? _writer;

    public CountingResponseBody(IHttpResponseBodyFeature inner, CancellationToken aborted, SendTimeoutPipeWriter? transport = null)
    {
        _inner = inner;
        _aborted = aborted;
        _transport = transport;
    }

    /// <summary>The request was aborted, or the connection's socket no longer takes bytes (a flush found its output ended).</summary>
    private bool Gone => _aborted.IsCancellationRequested || _transport is { OutputEnded: true };

    /// <summary>The feature this one wraps (restored when the request ends).</summary>
    public IHttpResponseBodyFeature Inner => _inner;

    public Stream Stream => _stream ??= new CountingStream(this, _inner.Stream);

    public PipeWriter Writer => _writer ??= new CountingWriter(this, _inner.Writer);

    /// <summary>Body bytes sent: those whose write completed before any abort, plus, when the response ends normally, those still buffered.</summary>
    public long BytesSent(bool completing) =>
        Interlocked.Read(ref _sent) + (completing && !Gone ? Interlocked.Read(ref _pending) : 0);

    public void DisableBuffering() => _inner.DisableBuffering();

    public Task StartAsync(CancellationToken cancellationToken = default) => _inner.StartAsync(cancellationToken);

    // Through our own stream, so that a file's bytes are counted as they are written (Kestrel's own SendFileAsync is the
    // same fallback: it has no zero-copy path).
    public Task SendFileAsync(string path, long offset, long? count, CancellationToken cancellationToken = default) =>
        SendFileFallback.SendFileAsync(Stream, path, offset, count, cancellationToken);

    public Task CompleteAsync() => _inner.CompleteAsync();

    private void Sent(long bytes)
    {
        if (!Gone)
            Interlocked.Add(ref _sent, bytes);
    }

    /// <summary>A flush completed: what was buffered has been handed to the connection.</summary>
    private void Flushed(FlushResult result)
    {
        var pending = Interlocked.Exchange(ref _pending, 0);
        if (!result.IsCanceled)
            Sent(pending);
    }

    private sealed class CountingStream(CountingResponseBody owner, Stream inner) : Stream
    {
        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => inner.CanWrite;

        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await inner.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
            owner.Sent(buffer.Length);
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Write(byte[] buffer, int offset, int count)
        {
            inner.Write(buffer, offset, count);
            owner.Sent(count);
        }

        public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

        public override void Flush() => inner.Flush();

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }

    private sealed class CountingWriter(CountingResponseBody owner, PipeWriter inner) : PipeWriter
    {
        public override bool CanGetUnflushedBytes => inner.CanGetUnflushedBytes;

        public override long UnflushedBytes => inner.UnflushedBytes;

        public override void Advance(int bytes)
        {
            inner.Advance(bytes);
            Interlocked.Add(ref owner._pending, bytes);
        }

        public override Memory<byte> GetMemory(int sizeHint = 0) => inner.GetMemory(sizeHint);

        public override Span<byte> GetSpan(int sizeHint = 0) => inner.GetSpan(sizeHint);

        public override void CancelPendingFlush() => inner.CancelPendingFlush();

        public override void Complete(Exception? exception = null) => inner.Complete(exception);

        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);

        public override async ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            var result = await inner.FlushAsync(cancellationToken).ConfigureAwait(false);
            owner.Flushed(result);
            return result;
        }

        public override async ValueTask<FlushResult> WriteAsync(ReadOnlyMemory<byte> source, CancellationToken cancellationToken = default)
        {
            Interlocked.Add(ref owner._pending, source.Length);
            var result = await inner.WriteAsync(source, cancellationToken).ConfigureAwait(false);
            owner.Flushed(result);
            return result;
        }
    }
}
