using System.Security.Cryptography;
using System.Threading.Channels;
using Dispatch.Platform.Interop;

namespace Dispatch.TlsDispatcher.Identity;

/// <summary>
/// Verifies passwords off the accept path: a bounded queue served by dedicated threads (never the thread pool that
/// runs every connection's I/O), each calling libcrypt (<see cref="LibCrypt.Verify"/>). bcrypt is slow by design (tens
/// of milliseconds at cost 10), so a burst of logins waits in the queue while other connections go on; a full queue
/// refuses at once (the caller answers 503).
/// </summary>
internal sealed class LoginVerifier : IDisposable
{
    /// <summary>Logins waiting at most; beyond that a login is refused as busy.</summary>
    public const int QueueCapacity = 256;

    private readonly Channel<Job> _queue = Channel.CreateBounded<Job>(new BoundedChannelOptions(QueueCapacity) { SingleWriter = false, SingleReader = false, FullMode = BoundedChannelFullMode.Wait });
    private readonly Thread[] _threads;
    private long _verified;

    public LoginVerifier(int threads)
    {
        _threads = new Thread[Math.Max(1, threads)];
        for (var i = 0; i < _threads.Length; i++)
        {
            _threads[i] = new Thread(Run) { IsBackground = true, Name = $"login-verifier-{i}" };
            _threads[i].Start();
        }
    }

    /// <summary>The process's verifier: one thread per core, at most 4, started on first use.</summary>
    public static LoginVerifier Shared => LazyShared.Value;

    private static readonly Lazy<LoginVerifier> LazyShared = new(() => new LoginVerifier(Math.Min(4, Environment.ProcessorCount)));

    /// <summary>Hashes verified so far.</summary>
    public long Verified => Interlocked.Read(ref _verified);

    /// <summary>
    /// Queues <paramref name="password"/> (taken over and zeroed once used) against <paramref name="hash"/>.
    /// Null when the queue is full.
    /// </summary>
    public Task<bool>? TryVerify(byte[] password, string hash)
    {
        var job = new Job(password, hash, new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously));
        if (_queue.Writer.TryWrite(job))
            return job.Result.Task;
        CryptographicOperations.ZeroMemory(password);
        return null;
    }

    public void Dispose() => _queue.Writer.TryComplete();

    private void Run()
    {
        var reader = _queue.Reader;
        while (true)
        {
            if (!reader.TryRead(out var job))
            {
                if (!reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
                    return;
                continue;
            }

            try
            {
                job.Result.TrySetResult(LibCrypt.Verify(job.Password, job.Hash));
            }
            catch (Exception e)
            {
                job.Result.TrySetException(e);
            }
            finally
            {
                CryptographicOperations.ZeroMemory(job.Password);
                Interlocked.Increment(ref _verified);
            }
        }
    }

    private sealed record Job(byte[] Password, string Hash, TaskCompletionSource<bool> Result);
}
