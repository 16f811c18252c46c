using System.Net.Sockets;
using Serilog;

namespace Dispatch.Master.Operations;

/// <summary>
/// systemd Type=notify: tells $NOTIFY_SOCKET (a Unix datagram socket) when the master is ready or stopping, and never
/// READY=1 after STOPPING=1.
/// </summary>
internal sealed class SystemdNotifier(ILogger log)
{
    private readonly Lock _gate = new();
    private int _stoppingNotified;

    /// <summary>Whether STOPPING=1 has been sent.</summary>
    public bool StoppingNotified => Volatile.Read(ref _stoppingNotified) != 0;

    /// <summary>STOPPING=1 with a status line; sent on every stop request and at the latest when the master stops.</summary>
    public void Stopping(string status)
    {
        lock (_gate)
        {
            _stoppingNotified = 1;
            Send($"STOPPING=1\nSTATUS={status}");
        }
    }

    /// <summary>READY=1, unless a stop came first (systemd must not hear READY=1 after STOPPING=1).</summary>
    public void Ready()
    {
        lock (_gate)
        {
            if (_stoppingNotified == 0)
                Send("READY=1\nSTATUS=serving");
        }
    }

    private void Send(string state)
    {
        var path = Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        if (string.IsNullOrEmpty(path))
            return;
        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            var endpoint = path[0] == '@' ? new UnixDomainSocketEndPoint("\0" + path[1..]) : new UnixDomainSocketEndPoint(path);
            socket.SendTo(System.Text.Encoding.UTF8.GetBytes(state), endpoint);
        }
        catch (SocketException e)
        {
            log.Warning("Could not notify systemd at {Socket}: {Reason}", path, e.Message);
        }
    }
}
