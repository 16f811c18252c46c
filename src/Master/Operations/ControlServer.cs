using System.Net.Sockets;
using System.Text;
using Dispatch.Master.Files;
using Dispatch.Platform.Interop;
using Serilog;

namespace Dispatch.Master.Operations;

/// <summary>
/// The operator's door into the running master: a Unix stream socket (<c>control.socket</c>, default
/// /run/dispatch/control.sock) in a root-owned directory, mode 0600, and every peer checked with
/// SO_PEERCRED: only uid 0 is answered. One command line per connection — <c>status</c>,
/// <c>status --json</c>, <c>reload</c>, <c>upgrade</c>, <c>reopen</c> — one answer, then the connection closes.
/// The master reads only these few bytes from root's own tools, never a client's.
/// </summary>
internal sealed class ControlServer : IDisposable
{
    private const int MaxCommand = 256;
    private readonly Socket _socket;
    private readonly string _path;
    private readonly MasterService _master;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly (ulong Dev, ulong Ino) _identity;

    private ControlServer(Socket socket, string path, MasterService master, ILogger log, (ulong, ulong) identity)
    {
        _socket = socket;
        _path = path;
        _master = master;
        _log = log;
        _identity = identity;
    }

    /// <summary>Binds the socket (refusing unsafe directories and a socket another master answers on); null, logged, when it cannot.</summary>
    public static ControlServer? Start(string path, MasterService master, ILogger log)
    {
        var dir = Path.GetDirectoryName(path)!;
        try
        {
            if (!Directory.Exists(dir))
                Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
            if (PathSafety.CheckRootOwned(dir) is { } problem)
            {
                log.Error("No control socket: {Directory} is not safe for it: {Reason}", dir, problem);
                return null;
            }

            if (Identity(path) != (0, 0))
            {
                if (!IsSocket(path))
                {
                    log.Error("No control socket: {Path} exists and is not a socket; remove it", path);
                    return null;
                }

                using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    probe.Connect(new UnixDomainSocketEndPoint(path));
                    log.Error("No control socket: another master answers on {Path}", path);
                    return null;
                }
                catch (SocketException)
                {
                    File.Delete(path); // stale, from a master that died
                }
            }

            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            socket.Bind(new UnixDomainSocketEndPoint(path));
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            socket.Listen(16);
            var server = new ControlServer(socket, path, master, log, Identity(path));
            FireAndForget.Observe(server.AcceptLoopAsync(), log, "Control socket accept loop");
            log.Information("Control socket {Path} listening (root only): status, reload, upgrade, reopen", path);
            return server;
        }
        catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException)
        {
            log.Error("No control socket at {Path}: {Reason}", path, e.Message);
            return null;
        }
    }

    /// <summary>True when a master accepts connections on <paramref name="path"/> now (a stale socket file does not count).</summary>
    public static bool AnotherMasterAnswers(string path)
    {
        if (!IsSocket(path))
            return false;
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private static unsafe bool IsSocket(string path)
    {
        Libc.Stat st;
        return Libc.LStat(path, &st) == 0 && (st.Mode & Libc.S_IFMT) == Libc.S_IFSOCK;
    }

    private static unsafe (ulong, ulong) Identity(string path)
    {
        Libc.Stat st;
        return Libc.LStat(path, &st) == 0 ? (st.Dev, st.Ino) : (0, 0);
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket peer;
            try
            {
                peer = await _socket.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                _log.Warning("Control socket accept failed: {Reason}", e.Message);
                await Task.Delay(100).ConfigureAwait(false);
                continue;
            }

            FireAndForget.Observe(ServeAsync(peer), _log, "Control socket request");
        }
    }

    private async Task ServeAsync(Socket peer)
    {
        using (peer)
        {
            try
            {
                // struct ucred { pid_t pid; uid_t uid; gid_t gid; }
                var cred = new byte[12];
                peer.GetRawSocketOption(1 /* SOL_SOCKET */, 17 /* SO_PEERCRED */, cred);
                var pid = BitConverter.ToInt32(cred, 0);
                var uid = BitConverter.ToUInt32(cred, 4);
                if (uid != 0)
                {
                    _log.Warning("Control socket: refused process {Pid} of uid {Uid} (root only)", pid, uid);
                    await peer.SendAsync(Encoding.UTF8.GetBytes("refused: only root may use the control socket\n"), SocketFlags.None).ConfigureAwait(false);
                    return;
                }

                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                var command = await ReadCommandAsync(peer, timeout.Token).ConfigureAwait(false);
                string answer;
                switch (command)
                {
                    case "status":
                        answer = await _master.StatusAsync(json: false).ConfigureAwait(false);
                        break;
                    case "status --json":
                        answer = await _master.StatusAsync(json: true).ConfigureAwait(false);
                        break;
                    case "reload":
                        answer = await _master.ReloadAsync($"control socket, pid {pid}").ConfigureAwait(false) + "\n";
                        break;
                    case "upgrade":
                        answer = await _master.UpgradeAsync($"control socket, pid {pid}").ConfigureAwait(false) + "\n";
                        break;
                    case "reopen":
                        Program.ReopenableFile?.Reopen();
                        _master.ReopenLogs();
                        answer = "reopened the master's log file and the workers' access and error logs\n";
                        break;
                    default:
                        answer = $"unknown command '{command}': status, status --json, reload, upgrade, reopen\n";
                        break;
                }

                _log.Debug("Control socket: {Command} from process {Pid}", command, pid);
                await peer.SendAsync(Encoding.UTF8.GetBytes(answer), SocketFlags.None).ConfigureAwait(false);
                peer.Shutdown(SocketShutdown.Send);
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException or IOException)
            {
                _log.Debug("Control socket connection ended: {Reason}", e.Message);
            }
        }
    }

    private static async Task<string?> ReadCommandAsync(Socket peer, CancellationToken cancellationToken)
    {
        var buffer = new byte[MaxCommand];
        var filled = 0;
        while (filled < buffer.Length)
        {
            var n = await peer.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, cancellationToken).ConfigureAwait(false);
            if (n == 0)
                break;
            filled += n;
            var nl = Array.IndexOf(buffer, (byte)'\n', 0, filled);
            if (nl >= 0)
                return Encoding.UTF8.GetString(buffer, 0, nl).Trim();
        }

        return filled == 0 ? null : Encoding.UTF8.GetString(buffer, 0, filled).Trim();
    }

    /// <summary>Client side (<c>Master status</c> and friends): sends one command, returns the answer.</summary>
    public static async Task<string> AskAsync(string path, string command)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(path)).ConfigureAwait(false);
        await socket.SendAsync(Encoding.UTF8.GetBytes(command + "\n"), SocketFlags.None).ConfigureAwait(false);
        var answer = new MemoryStream();
        var buffer = new byte[16384];
        int n;
        while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None).ConfigureAwait(false)) > 0)
            answer.Write(buffer, 0, n);
        return Encoding.UTF8.GetString(answer.ToArray());
    }

    private bool _disposed;

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _stop.Cancel();
        _socket.Dispose();
        // Remove the socket file only if it is still ours (not a newer master's).
        if (Identity(_path) == _identity)
            File.Delete(_path);
        _stop.Dispose();
    }
}
