using System.Net.Sockets;
using Serilog;

namespace Dispatch.TlsDispatcher.Net;

/// <summary>One listening socket's accept loop; subclasses handle each connection.</summary>
internal abstract class Frontend
{
    private int _inFlight;
    private long _nextConnection;

    protected Frontend(Socket listener, string localName, ILogger log)
    {
        Listener = listener;
        LocalName = localName;
        Log = log;
    }

    protected Socket Listener { get; }

    protected string LocalName { get; }

    protected ILogger Log { get; }

    /// <summary>Connections being read, routed or (for terminated TLS) proxied.</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    public async Task RunAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await Listener.AcceptAsync(stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                // EMFILE and friends: say so and keep accepting (after a breath, not a spin).
                Log.Warning("accept on {Listener} failed: {Reason}", LocalName, e.Message);
                await Task.Delay(50, CancellationToken.None).ConfigureAwait(false);
                continue;
            }

            _ = RunOneAsync(client, (ulong)Interlocked.Increment(ref _nextConnection));
        }
    }

    private async Task RunOneAsync(Socket client, ulong id)
    {
        Interlocked.Increment(ref _inFlight);
        try
        {
            await HandleAsync(client, id).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException or OperationCanceledException)
        {
            Log.Debug("Connection {ConnectionId} ended: {Reason}", id, e.Message);
        }
        catch (Exception e)
        {
            Log.Error(e, "Connection {ConnectionId} failed unexpectedly", id);
        }
        finally
        {
            client.Dispose();
            Interlocked.Decrement(ref _inFlight);
        }
    }

    /// <summary>Handles one accepted connection; the caller disposes <paramref name="client"/> afterwards.</summary>
    protected abstract Task HandleAsync(Socket client, ulong id);
}
