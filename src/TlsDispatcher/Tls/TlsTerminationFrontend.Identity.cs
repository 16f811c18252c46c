using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using Dispatch.Platform.Hosting;
using Dispatch.TlsDispatcher.Http;
using Dispatch.TlsDispatcher.Identity;
using Dispatch.TlsDispatcher.Net;
using Dispatch.Wire;
using Dispatch.Wire.Identity;
using Dispatch.Wire.Payloads;

namespace Dispatch.TlsDispatcher.Tls;

/// <summary>
/// Identity vhosts (<c>"identity": "authenticated"</c>): after the handshake the dispatcher decrypts records one at a
/// time until the first request head is complete (bounded by <c>dispatcher.maxRequestHead</c> and
/// <c>dispatcher.headerTimeout</c>), checks its Basic credentials on the <see cref="LoginVerifier"/>'s threads, and
/// either answers itself (401 with WWW-Authenticate, 429 when throttled, 400/421/431/503) and closes, or hands the
/// session to the login's pool with the read sequence number advanced past those records and their plaintext, which
/// the worker reads before anything its record layer decrypts.
/// </summary>
internal sealed partial class TlsTerminationFrontend
{
    private async Task IdentityHandOffAsync(BcServerCredentials credentials, VhostRoute route, ReadOnlyMemory<byte> hello, ulong id, ConnectionStart start, string? sni, DispatcherSettings settings, CancellationToken timeout)
    {
        var identity = route.Identity!;
        using var session = new BcTlsSession(credentials, Http11Only, tickets: SessionTicketKeys.Shared, vhost: route.Name);
        var buffer = KeptArrayPool.Instance.Rent(HandshakeReceiveSize);
        var plain = KeptArrayPool.Instance.Rent(settings.MaxRequestHead + BcTlsSession.MaxRecordLength);
        try
        {
            if (!await HandshakeOnPollerAsync(session, hello, buffer, id, start, sni, timeout).ConfigureAwait(false))
                return;
            Interlocked.Increment(ref DispatcherMetrics.HandshakesOk);

            // The first request head, decrypted record by record.
            var host = new char[256];
            int filled = 0, scanned = 0, headLength = 0, hostLength = 0;
            using (var headTimeout = new CancellationTokenSource(settings.HeaderTimeoutMs))
            {
                try
                {
                    while (true)
                    {
                        var status = HeadStatus.Incomplete;
                        var errorStatus = 400;
                        string? error = null;
                        while (status == HeadStatus.Incomplete && session.TryDecryptHeldRecord())
                        {
                            if (filled + session.PlaintextAvailable > plain.Length)
                            {
                                status = HeadStatus.Invalid;
                                errorStatus = 431;
                                break;
                            }

                            filled += session.ReadPlaintext(plain, filled, plain.Length - filled);
                            status = RequestHead.Parse(plain.AsSpan(0, filled), ref scanned, host, out hostLength, out headLength, out errorStatus, out error);
                            if (status == HeadStatus.Incomplete && filled >= settings.MaxRequestHead)
                            {
                                status = HeadStatus.Invalid;
                                errorStatus = 431;
                            }
                        }

                        await SendOutputAsync(start.Fd, session, buffer, headTimeout.Token).ConfigureAwait(false);
                        if (status == HeadStatus.Complete)
                            break;
                        if (status == HeadStatus.Invalid)
                        {
                            var reason = errorStatus == 431 ? $"the request head exceeds {settings.MaxRequestHead} bytes" : error ?? "malformed request head";
                            Log.Information("Connection {ConnectionId} from {Client} ({Sni}): {Status} {Reason}", id, start.ClientText, sni, errorStatus, reason);
                            await RespondAsync(session, route.Name, start, buffer, errorStatus, errorStatus == 431 ? "Request Header Fields Too Large" : "Bad Request", reason + "\n", null).ConfigureAwait(false);
                            return;
                        }

                        if (session.IsClosed)
                            return;
                        var n = await ReceiveAsync(start.Fd, buffer.AsMemory(0, HandshakeReceiveSize), headTimeout.Token).ConfigureAwait(false);
                        if (n == 0)
                            return;
                        session.Offer(buffer, 0, n);
                    }
                }
                catch (BcTlsException e)
                {
                    Log.Information("Connection {ConnectionId} from {Client} ({Sni}): TLS failed before the first request: {Reason}", id, start.ClientText, sni, e.Message);
                    await SendFinalAsync(start.Fd, session, buffer).ConfigureAwait(false);
                    return;
                }
                catch (OperationCanceledException)
                {
                    Log.Information("Connection {ConnectionId} from {Client} ({Sni}): no complete request head within {Timeout} ms", id, start.ClientText, sni, settings.HeaderTimeoutMs);
                    await RespondAsync(session, route.Name, start, buffer, 408, "Request Timeout", "No complete request arrived in time.\n", null).ConfigureAwait(false);
                    return;
                }
            }

            var head = plain.AsSpan(0, headLength);
            var hostName = new string(host, 0, hostLength);
            if (_routes().Route(hostName) is not { } hostRoute || hostRoute.Name != route.Name)
            {
                Log.Information("Connection {ConnectionId} from {Client} ({Sni}): Host {Host} is not this vhost; 421", id, start.ClientText, sni, hostName);
                await RespondAsync(session, route.Name, start, buffer, 421, "Misdirected Request", $"{hostName} is not served on this connection.\n", null).ConfigureAwait(false);
                return;
            }

            var count = BasicCredentials.FindAuthorization(head, out var range);
            if (count > 1)
            {
                await RespondAsync(session, route.Name, start, buffer, 400, "Bad Request", "More than one Authorization header.\n", null).ConfigureAwait(false);
                return;
            }

            var challenge = $"WWW-Authenticate: Basic realm=\"{identity.Realm}\", charset=\"UTF-8\"\r\n";
            if (count == 0 || !BasicCredentials.TryParse(head[range], out var login, out var password))
            {
                Interlocked.Increment(ref DispatcherMetrics.LoginsChallenged);
                Log.Information("Connection {ConnectionId} from {Client} ({Sni}): {What}; 401", id, start.ClientText, sni, count == 0 ? "no credentials" : "credentials that are not Basic login:password");
                await RespondAsync(session, route.Name, start, buffer, 401, "Unauthorized", "This site needs a login.\n", challenge).ConfigureAwait(false);
                return;
            }

            var address = start.Client?.Address.ToString() ?? "-";
            var throttle = LoginThrottle.For(route.Name);
            if (throttle.Blocked(address, login, identity.FailuresPerAddress, identity.FailuresPerLogin, identity.FailureWindowMs, Environment.TickCount64) is { } blocked)
            {
                CryptographicOperations.ZeroMemory(password);
                Interlocked.Increment(ref DispatcherMetrics.LoginsThrottled);
                Log.Warning("Connection {ConnectionId} from {Client} ({Sni}): login {Login} throttled: too many failed logins for this {Which}; 429 for {RetryAfter} s", id, start.ClientText, sni, login, blocked.Which, blocked.RetryAfter);
                await RespondAsync(session, route.Name, start, buffer, 429, "Too Many Requests", "Too many failed logins; try again later.\n", $"Retry-After: {blocked.RetryAfter}\r\n").ConfigureAwait(false);
                return;
            }

            // An unknown login costs a hash too (the first login's, same cost), so that timing does not tell which logins exist.
            var user = identity.Users.FirstOrDefault(u => u.Login == login);
            var hash = user?.Hash ?? (identity.Users.Count > 0 ? identity.Users[0].Hash : null);
            var ok = false;
            if (hash is not null)
            {
                var verification = LoginVerifier.Shared.TryVerify(password, hash);
                if (verification is null)
                {
                    Log.Warning("Connection {ConnectionId} from {Client} ({Sni}): {Queue} logins are already waiting for verification; 503", id, start.ClientText, sni, LoginVerifier.QueueCapacity);
                    await RespondAsync(session, route.Name, start, buffer, 503, "Service Unavailable", "Too many logins at once; try again shortly.\n", "Retry-After: 1\r\n").ConfigureAwait(false);
                    return;
                }

                ok = await verification.ConfigureAwait(false) && user is not null;
            }
            else
            {
                CryptographicOperations.ZeroMemory(password);
            }

            if (!ok)
            {
                throttle.Failed(address, login, identity.FailureWindowMs, Environment.TickCount64);
                Interlocked.Increment(ref DispatcherMetrics.LoginsFailed);
                Log.Warning("Connection {ConnectionId} from {Client} ({Sni}): login {Login} failed ({Why}); 401", id, start.ClientText, sni, login, user is null ? "no such login" : "wrong password");
                await RespondAsync(session, route.Name, start, buffer, 401, "Unauthorized", "Wrong login or password.\n", challenge).ConfigureAwait(false);
                return;
            }

            Interlocked.Increment(ref DispatcherMetrics.LoginsOk);
            if (!session.TryExportForHandOff(out var state, out var remaining) || state is null || remaining.Length > Connection.MaxInitial || filled > Connection.MaxInitial)
            {
                Log.Error("Connection {ConnectionId} ({Sni}): the TLS session could not be exported after the first request; closing", id, sni);
                return;
            }

            Poller.Remove(start.Fd);
            var decrypted = plain.AsSpan(0, filled).ToArray();
            var meta = new Connection(id, ConnectionMode.HandedTls, AppProtocol.Http1, start.ClientText, LocalName, sni, session.ProtocolVersion, session.CipherSuiteName, remaining, state, decrypted);
            bool handed;
            try
            {
                handed = await _workers.HandOffAsync(user!.Pool, meta, start.Fd, settings).ConfigureAwait(false);
            }
            finally
            {
                // The head holds the client's password: nothing of it stays here once it has been sent (or refused).
                state.Clear();
                CryptographicOperations.ZeroMemory(decrypted);
            }

            if (handed)
            {
                Interlocked.Increment(ref DispatcherMetrics.HandedTls);
                Log.Information("Connection {ConnectionId} from {Client} ({Sni}): {Login} logged in; handed to pool {Pool}", id, start.ClientText, sni, login, user.Pool);
                return;
            }

            Interlocked.Increment(ref DispatcherMetrics.NoWorker);
            await RespondAsync(session, route.Name, start, buffer, 503, "Service Unavailable", "No worker is available for this site right now; try again shortly.\n", null).ConfigureAwait(false);
        }
        finally
        {
            KeptArrayPool.Instance.Return(plain, clearArray: true);
            KeptArrayPool.Instance.Return(buffer, clearArray: true);
        }
    }

    /// <summary>Answers the request through the session, then close_notify and the end of our side.</summary>
    private async Task RespondAsync(BcTlsSession session, string vhost, ConnectionStart start, byte[] buffer, int code, string reason, string body, string? extraHeaders)
    {
        var fd = start.Fd;
        DispatcherMetrics.Response(code, vhost, Encoding.UTF8.GetByteCount(body), start.AcceptedAt);
        try
        {
            session.WritePlaintext(Encoding.ASCII.GetBytes($"HTTP/1.1 {code} {reason}\r\n{extraHeaders}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {Encoding.UTF8.GetByteCount(body)}\r\nConnection: close\r\n\r\n{body}"));
            session.Close();
        }
        catch (BcTlsException)
        {
            // The session failed meanwhile: nothing more can be said.
        }

        await SendFinalAsync(fd, session, buffer).ConfigureAwait(false);
    }
}
