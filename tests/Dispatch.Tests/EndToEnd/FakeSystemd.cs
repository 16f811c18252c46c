using System.Net.Sockets;
using System.Text;

namespace Dispatch.Tests.EndToEnd;

/// <summary>
/// What systemd gives a Type=notify service: a Unix datagram socket named by $NOTIFY_SOCKET. Each
/// <see cref="Next"/> is one notification (READY=1, STOPPING=1, …), waited for with a deadline.
/// </summary>
public sealed class FakeSystemd : IDisposable
{
    private readonly Socket _socket = new(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);

    public FakeSystemd(string directory)
    {
        Path = System.IO.Path.Combine(directory, "notify.sock");
        _socket.Bind(new UnixDomainSocketEndPoint(Path));
        _socket.ReceiveTimeout = 60_000;
    }

    public string Path { get; }

    /// <summary>The environment that points a master at this socket.</summary>
    public IReadOnlyDictionary<string, string> Environment => new Dictionary<string, string> { ["NOTIFY_SOCKET"] = Path };

    /// <summary>
    /// Runs the master as a background job of a non-interactive shell, or under nohup, starts it: with every
    /// signal it handles inherited as ignored (SIG_IGN survives exec). It must handle them anyway.
    /// </summary>
    public static IReadOnlyList<string> IgnoringSignals => ["/bin/sh", "-c", "trap '' HUP INT QUIT TERM USR1 USR2; exec \"$0\" \"$@\""];

    /// <summary>The next notification; throws when none comes within 60 s.</summary>
    public string Next()
    {
        var buffer = new byte[4096];
        try
        {
            return Encoding.UTF8.GetString(buffer, 0, _socket.Receive(buffer));
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.TimedOut)
        {
            throw new TimeoutException("systemd heard nothing more within 60 s", e);
        }
    }

    public void Dispose() => _socket.Dispose();
}
