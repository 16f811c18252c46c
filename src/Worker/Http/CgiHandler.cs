using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Dispatch.Platform.Interop;
using Dispatch.Wire.Interop;
using Dispatch.Wire.Payloads;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Serilog.Core;

namespace Dispatch.Worker.Http;

/// <summary>
/// CGI/1.1 (RFC 3875) for the URL prefixes a vhost maps to script directories; one instance per worker, shared by its
/// vhosts (it counts the scripts running in this process).
/// </summary>
/// <remarks>
/// <para><b>Mapping.</b> A request path under a mapping's prefix is CGI and nothing else (never a static file): the path
/// after the prefix is walked segment by segment inside the directory; the first segment that is a file is the script,
/// the rest is PATH_INFO. Segments are checked like static paths (<see cref="ConfinedFileProvider.IsAcceptableSubpath"/>:
/// no <c>.</c>/<c>..</c>, nothing still percent-encoded, no control characters or backslashes, no <c>.ht*</c>,
/// <c>.git</c>…), and each candidate's real path must lie inside the directory's real path. Not found, refused, a
/// directory or a special file: 404. A regular file the worker may not execute: 403.</para>
/// <para><b>Process.</b> See <see cref="CgiProcess"/>: posix_spawn as the worker's own uid (the worker is the tenant,
/// in its Landlock domain), stdin/stdout/stderr on pipes, nothing else inherited, working directory the script's, a
/// process group of its own, argv = the script path only, and an environment of exactly the CGI meta-variables
/// (<see cref="BuildEnvironment"/>) plus <c>PATH=/usr/local/bin:/usr/bin:/bin</c>.</para>
/// <para><b>Request body.</b> Streamed into stdin as it arrives, then stdin is closed. CONTENT_LENGTH is set when the
/// request has a Content-Length; a body without one (chunked, HTTP/2 without content-length) is streamed without
/// CONTENT_LENGTH, as Apache's mod_cgi does (a script reads to end of file). If the script closes its stdin early, the
/// rest of the body is not read. If reading the body fails (client gone, body too large), the script is killed before
/// its stdin is closed, so it never takes a truncated body for a complete one.</para>
/// <para><b>Response.</b> The header block (<see cref="CgiResponseHead"/>, at most <see cref="CgiLimits.MaxHeaderBytes"/>)
/// is parsed before anything is sent; invalid, too large, or missing at end of output: 502. Status sets the status
/// (and reason phrase); Location without Status is answered 302 — a local redirect (<c>Location: /path</c>) is sent to
/// the client as a 302 too, not followed inside the server; Content-Length is honoured (a script writing less aborts
/// the connection, more is cut off); connection-specific fields are dropped; other fields pass through. The body is
/// streamed as it comes (chunked without Content-Length), with Kestrel's backpressure, never buffered whole. Headers go
/// out as soon as the header block is complete. Non-parsed-header (<c>nph-</c>) scripts are not supported: their
/// output is parsed like any other.</para>
/// <para><b>End.</b> The response is completed when stdout reaches end of file; the run ends when the script has exited;
/// then anything left in its process group is killed and the script reaped. Timeout (<see cref="WorkerVhost.CgiTimeout"/>,
/// spawn to exit): the group is killed, 504 if nothing was sent, else the connection is aborted. Client gone: the group
/// is killed. Exit before a header: 502. stderr lines are logged at Warning (bounded: <see cref="MaxStderrLineBytes"/>
/// per line, <see cref="MaxStderrLines"/> per run). Stderr lines and failures go to the vhost's error log when it has
/// one, else to the worker's log (<see cref="RequestErrors"/>). Beyond <see cref="CgiLimits.MaxProcesses"/> running scripts: 503.</para>
/// <para><b>Not covered.</b> A script that leaves its process group (setsid) escapes the group kill; a worker killed
/// hard (SIGKILL) leaves its running scripts to end on their own — both need a cgroup per worker to close. The request
/// body is bounded by the vhost's <c>maxBodySize</c> (32 MiB by default, see <see cref="VhostFeatures"/>), enforced by
/// Kestrel while the body is read: beyond it 413 before the script's header, an aborted connection after.</para>
/// </remarks>
internal sealed class CgiHandler(Serilog.ILogger log)
{
    /// <summary>SourceContext of CGI log events (stderr lines, failures).</summary>
    public const string LogSourceContext = "Dispatch.Worker.Http.Cgi";

    public const int MaxStderrLineBytes = 2048;
    public const int MaxStderrLines = 200;

    private const int BufferSize = 64 * 1024;

    // How long a run's clean-up waits for the feed of the request body to end once told to (it ends at once, unless a body
    // read on an aborted connection is not woken): the script is then killed and its descriptors closed all the same.
    private static readonly TimeSpan FeedEndWait = TimeSpan.FromSeconds(5);

    private static readonly byte[] NotFoundBody = Encoding.UTF8.GetBytes("Not Found\n");
    private static readonly byte[] ForbiddenBody = Encoding.UTF8.GetBytes("Forbidden\n");
    private static readonly byte[] BusyBody = Encoding.UTF8.GetBytes("Service Unavailable: too many CGI scripts running\n");
    private static readonly byte[] BadGatewayBody = Encoding.UTF8.GetBytes("Bad Gateway: the CGI script failed\n");
    private static readonly byte[] TimeoutBody = Encoding.UTF8.GetBytes("Gateway Timeout: the CGI script did not answer in time\n");

    private readonly Serilog.ILogger _log = log.ForContext(Constants.SourceContextPropertyName, LogSourceContext);
    private readonly ConcurrentDictionary<CgiProcess, byte> _running = new();
    private int _runningCount;

    /// <summary>Scripts running now in this worker.</summary>
    public int Running => Volatile.Read(ref _runningCount);

    /// <summary>Checks a vhost's CGI settings (at start, with the other vhost checks).</summary>
    /// <exception cref="ArgumentException">A prefix is not an absolute URL path, or a directory not an absolute path.</exception>
    public static IReadOnlyList<CgiRoute> NormalizeMappings(string vhost, IReadOnlyList<CgiRoute> settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var mappings = new List<CgiRoute>();
        foreach (var mapping in settings)
        {
            ArgumentNullException.ThrowIfNull(mapping);
            var prefix = mapping.UrlPrefix;
            if (string.IsNullOrEmpty(prefix) || prefix[0] != '/' || !ConfinedFileProvider.IsAcceptableSubpath(prefix) || prefix.Contains('\0', StringComparison.Ordinal))
            {
                throw new ArgumentException($"CGI prefix '{prefix}' of vhost '{vhost}' is not an absolute URL path.", nameof(settings));
            }

            if (string.IsNullOrEmpty(mapping.Directory) || !Path.IsPathFullyQualified(mapping.Directory))
            {
                throw new ArgumentException($"CGI directory '{mapping.Directory}' of vhost '{vhost}' is not an absolute path.", nameof(settings));
            }

            mappings.Add(new CgiRoute(prefix.EndsWith('/') ? prefix : prefix + "/", mapping.Directory));
        }

        if (mappings.Select(m => m.UrlPrefix).Distinct(StringComparer.Ordinal).Count() != mappings.Count)
        {
            throw new ArgumentException($"Vhost '{vhost}' maps the same CGI prefix twice.", nameof(settings));
        }

        return [.. mappings.OrderByDescending(m => m.UrlPrefix.Length)];
    }

    /// <summary>The vhost's CGI middleware, placed before static files.</summary>
    public Func<RequestDelegate, RequestDelegate> Middleware(Vhost vhost)
    {
        var mappings = NormalizeMappings(vhost.Name, vhost.Settings.Cgi);
        var settings = new CgiRunLimits(vhost.Settings.EffectiveCgiTimeout(), vhost.CgiLimits.MaxProcesses, vhost.CgiLimits.MaxOutputBytes);
        return next => context =>
        {
            var path = context.Request.Path.Value ?? string.Empty;
            foreach (var mapping in mappings)
            {
                if (path.StartsWith(mapping.UrlPrefix, StringComparison.Ordinal))
                {
                    return HandleAsync(context, vhost, settings, mapping, path[mapping.UrlPrefix.Length..]);
                }
            }

            return next(context);
        };
    }

    /// <summary>Kills every running script's process group (server stopping); the runs then end and reap them.</summary>
    public void KillAll()
    {
        foreach (var process in _running.Keys)
        {
            process.Kill();
        }
    }

    /// <summary>
    /// Resolves the part of the request path after the prefix to a script inside <paramref name="directory"/>.
    /// Returns 0 and the script, 404 or 403.
    /// </summary>
    internal static int Resolve(string directory, string remainder, out string scriptPath, out int scriptNameLength)
    {
        scriptPath = string.Empty;
        scriptNameLength = 0;
        if (remainder.Contains('\0', StringComparison.Ordinal))
        {
            return StatusCodes.Status404NotFound;
        }

        var directoryReal = NativeFileSystem.RealPath(directory);
        if (directoryReal is null)
        {
            return StatusCodes.Status404NotFound;
        }

        var start = 0;
        while (start < remainder.Length)
        {
            var slash = remainder.IndexOf('/', start);
            var end = slash < 0 ? remainder.Length : slash;
            var segment = remainder.AsSpan(start, end - start);
            if (segment.IsEmpty || !ConfinedFileProvider.IsAcceptableSubpath(segment))
            {
                return StatusCodes.Status404NotFound;
            }

            var real = NativeFileSystem.RealPath(string.Concat(directoryReal, "/", remainder.AsSpan(0, end)));
            if (real is null
                || !ConfinedFileProvider.IsSameOrBeneath(directoryReal, real, out var realRelative)
                || realRelative.IsEmpty
                || !ConfinedFileProvider.IsAcceptableSubpath(realRelative)
                || !NativeFileSystem.TryStat(real, out var type, out _, out _))
            {
                return StatusCodes.Status404NotFound;
            }

            if (type == NativeFileSystem.EntryType.File)
            {
                if (CgiNative.Access(real, CgiNative.XOk) != 0)
                {
                    return StatusCodes.Status403Forbidden;
                }

                scriptPath = real;
                scriptNameLength = end;
                return 0;
            }

            if (type != NativeFileSystem.EntryType.Directory)
            {
                return StatusCodes.Status404NotFound;
            }

            start = end + 1;
        }

        return StatusCodes.Status404NotFound; // a directory (or the prefix itself): no listing, no index
    }

    /// <summary>
    /// The script's whole environment: the CGI meta-variables, one HTTP_* per request header whose name is letters,
    /// digits and '-' only (so <c>X_Foo</c> cannot pose as <c>X-Foo</c>), except Proxy (httpoxy), Content-Type and
    /// Content-Length (already CONTENT_TYPE/CONTENT_LENGTH); Authorization is passed (the tenant's own application may
    /// authenticate); repeated headers are joined with ", " (Cookie with "; "). Values containing NUL are left out.
    /// </summary>
    internal static string[] BuildEnvironment(HttpContext context, Vhost vhost, CgiRoute mapping, string remainder, string scriptPath, int scriptNameLength)
    {
        var request = context.Request;
        var connection = context.Connection;
        var scriptName = string.Concat(mapping.UrlPrefix, remainder.AsSpan(0, scriptNameLength));
        var pathInfo = remainder[scriptNameLength..];
        VhostTable.TryGetHostName(request.Headers.Host.ToString(), out var serverName);
        var remote = connection.RemoteIpAddress is { IsIPv4MappedToIPv6: true } mapped ? mapped.MapToIPv4() : connection.RemoteIpAddress;
        var environment = new List<string>(32 + request.Headers.Count)
        {
            "AUTH_TYPE=",
            "GATEWAY_INTERFACE=CGI/1.1",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "PATH_INFO=" + pathInfo,
            "QUERY_STRING=" + (request.QueryString.HasValue ? request.QueryString.Value![1..] : string.Empty),
            "REMOTE_ADDR=" + remote,
            "REMOTE_PORT=" + connection.RemotePort.ToString(CultureInfo.InvariantCulture),
            "REQUEST_METHOD=" + request.Method,
            "REQUEST_URI=" + (context.Features.Get<IHttpRequestFeature>()?.RawTarget ?? request.Path + request.QueryString),
            "SCRIPT_FILENAME=" + scriptPath,
            "SCRIPT_NAME=" + scriptName,
            "SERVER_NAME=" + serverName.ToString(),
            "SERVER_PORT=" + connection.LocalPort.ToString(CultureInfo.InvariantCulture),
            "SERVER_PROTOCOL=" + request.Protocol,
            "SERVER_SOFTWARE=Dispatch",
        };
        if (pathInfo.Length > 0)
        {
            environment.Add("PATH_TRANSLATED=" + vhost.Settings.Root.TrimEnd('/') + pathInfo);
        }

        if (request.ContentLength is { } length)
        {
            environment.Add("CONTENT_LENGTH=" + length.ToString(CultureInfo.InvariantCulture));
        }

        if (request.Headers.ContentType.Count > 0)
        {
            environment.Add("CONTENT_TYPE=" + request.Headers.ContentType.ToString());
        }

        if (request.IsHttps)
        {
            environment.Add("HTTPS=on");
        }

        foreach (var (name, values) in request.Headers)
        {
            if (!IsPassableHeaderName(name))
            {
                continue;
            }

            var value = values.Count == 1
                ? values[0]!
                : string.Join(name.Equals("Cookie", StringComparison.OrdinalIgnoreCase) ? "; " : ", ", values.ToArray());
            environment.Add(string.Create(CultureInfo.InvariantCulture, $"HTTP_{name.ToUpperInvariant().Replace('-', '_')}={value}"));
        }

        environment.RemoveAll(static entry => entry.Contains('\0', StringComparison.Ordinal));
        return [.. environment];
    }

    internal static bool IsPassableHeaderName(string name)
    {
        if (name.Length == 0
            || name.Equals("Proxy", StringComparison.OrdinalIgnoreCase)
            || name.Equals("Content-Type", StringComparison.OrdinalIgnoreCase)
            || name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        foreach (var c in name)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c != '-')
            {
                return false;
            }
        }

        return true;
    }

    private async Task HandleAsync(HttpContext context, Vhost vhost, CgiRunLimits settings, CgiRoute mapping, string remainder)
    {
        var refusal = Resolve(mapping.Directory, remainder, out var scriptPath, out var scriptNameLength);
        if (refusal != 0)
        {
            await RequestHandler.WriteTextAsync(
                context, refusal, refusal == StatusCodes.Status403Forbidden ? ForbiddenBody : NotFoundBody, close: false);
            return;
        }

        if (Interlocked.Increment(ref _runningCount) > settings.MaxProcesses)
        {
            Interlocked.Decrement(ref _runningCount);
            RequestErrors.For(vhost, context, _log).Warning("CGI {Script} of {Vhost} refused: {Limit} scripts already running", scriptPath, vhost.Name, settings.MaxProcesses);
            context.Response.Headers.RetryAfter = "1";
            await RequestHandler.WriteTextAsync(context, StatusCodes.Status503ServiceUnavailable, BusyBody, close: false);
            return;
        }

        try
        {
            var environment = BuildEnvironment(context, vhost, mapping, remainder, scriptPath, scriptNameLength);
            CgiProcess process;
            try
            {
                process = CgiProcess.Start(scriptPath, Path.GetDirectoryName(scriptPath)!, environment);
            }
            catch (SysCallException e)
            {
                // pipe2/fcntl failed: out of descriptors (EMFILE/ENFILE) or memory.
                RequestErrors.For(vhost, context, _log).Warning("CGI {Script} of {Vhost} could not be started: {Reason}", scriptPath, vhost.Name, e.Message);
                context.Response.Headers.RetryAfter = "1";
                await RequestHandler.WriteTextAsync(context, StatusCodes.Status503ServiceUnavailable, BusyBody, close: false);
                return;
            }
            catch (CgiSpawnException e)
            {
                // EACCES here (access(2) said yes): Landlock, a noexec mount, or an interpreter the worker may not run.
                // ENOENT/ENOEXEC: the #! interpreter is missing or the file is no executable format.
                RequestErrors.For(vhost, context, _log).Warning("CGI {Script} of {Vhost} could not be started: {Reason}", scriptPath, vhost.Name, e.Message);
                await (e.Errno == Libc.EACCES
                    ? RequestHandler.WriteTextAsync(context, StatusCodes.Status403Forbidden, ForbiddenBody, close: false)
                    : RequestHandler.WriteTextAsync(context, StatusCodes.Status502BadGateway, BadGatewayBody, close: false));
                return;
            }

            _running[process] = 0;
            try
            {
                await new CgiRun(this, context, vhost, settings, scriptPath, process).RunAsync();
            }
            finally
            {
                _running.TryRemove(process, out _);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _runningCount);
        }
    }

    /// <summary>One script run: feeds stdin, logs stderr, turns stdout into the response, and cleans up.</summary>
    private sealed class CgiRun(CgiHandler owner, HttpContext context, Vhost vhost, CgiRunLimits settings, string script, CgiProcess process)
    {
        private Serilog.ILogger? _errors;
        private Exception? _inputError;

        /// <summary>The vhost's error log (with this request's client, id and path) or the worker's log.</summary>
        private Serilog.ILogger Log => _errors ??= RequestErrors.For(vhost, context, owner._log);

        public async Task RunAsync()
        {
            using var timeout = new CancellationTokenSource(settings.Timeout);
            using var clientLeft = HalfCloseConnectionContext.AbortOnInputEnd(context);
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, context.RequestAborted);
            using var stopInput = CancellationTokenSource.CreateLinkedTokenSource(stop.Token);
            using var stopStderr = new CancellationTokenSource();
            var kill = stop.Token.UnsafeRegister(static state => ((CgiProcess)state!).Kill(), process);
            var stdin = Task.CompletedTask;
            var stderr = Task.CompletedTask;
            try
            {
                stdin = FeedStdinAsync(stopInput.Token);
                stderr = LogStderrAsync(stopStderr.Token);
                await ServeOutputAsync(stderr, timeout.Token, stop.Token);
            }
            finally
            {
                await stopInput.CancelAsync();
                try
                {
                    await stdin.WaitAsync(FeedEndWait);
                }
                catch (TimeoutException)
                {
                    Log.Warning("CGI {Script} of {Vhost}: the request body's read did not end in {Seconds} s; cleaned up without it", script, vhost.Name, FeedEndWait.TotalSeconds);
                }
                finally
                {
                    // Even if the feed failed in a way not foreseen: the script is killed, reaped and its descriptors closed.
                    if (!process.Exited.IsCompleted)
                    {
                        process.Kill();
                    }

                    await kill.DisposeAsync();
                    stopStderr.CancelAfter(TimeSpan.FromSeconds(1));
                    await stderr;
                    await process.DisposeAsync();
                }
            }
        }

        private async Task ServeOutputAsync(Task stderr, CancellationToken timeout, CancellationToken stop)
        {
            var response = context.Response;
            var buffer = new byte[BufferSize];
            var filled = 0;
            int bodyStart;
            int headLength;

            // 1. The header block: nothing is sent before it is complete and valid.
            while (true)
            {
                int n;
                try
                {
                    n = await process.Stdout.ReadAsync(buffer.AsMemory(filled, CgiLimits.MaxHeaderBytes - filled), stop);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    await FailBeforeHeaderAsync();
                    return;
                }

                if (n == 0)
                {
                    await EndedWithoutHeaderAsync(filled, stderr, stop);
                    return;
                }

                var scanFrom = filled;
                filled += n;
                bodyStart = CgiResponseHead.FindBodyStart(buffer.AsSpan(0, filled), scanFrom, out headLength);
                if (bodyStart >= 0)
                {
                    break;
                }

                if (filled == CgiLimits.MaxHeaderBytes)
                {
                    await BadGatewayAsync($"no end of the header block within {CgiLimits.MaxHeaderBytes} bytes");
                    return;
                }
            }

            if (!CgiResponseHead.TryParse(buffer.AsSpan(0, headLength), out var head, out var error))
            {
                await BadGatewayAsync("invalid response header: " + error);
                return;
            }

            var sendBody = head.ApplyTo(context);

            // 2. The body, streamed.
            long sent = 0;
            long produced = 0;
            var limit = head.ContentLength ?? long.MaxValue;
            var pending = buffer.AsMemory(bodyStart, filled - bodyStart);
            var cut = false;
            try
            {
                if (pending.IsEmpty)
                {
                    // Let the client see the status now, whatever the script does next.
                    await response.StartAsync(stop);
                    await response.Body.FlushAsync(stop);
                }

                var max = settings.MaxOutputBytes ?? long.MaxValue;
                while (true)
                {
                    produced += pending.Length;
                    if (produced > max)
                    {
                        Log.Warning("CGI {Script} of {Vhost} exceeded {Max} bytes of output: killed, connection aborted", script, vhost.Name, max);
                        process.Kill();
                        context.Abort();
                        return;
                    }

                    // With no body allowed (HEAD, 204, 304), the output is read and dropped.
                    if (!pending.IsEmpty && sendBody)
                    {
                        var take = (int)Math.Min(pending.Length, limit - sent);
                        if (take < pending.Length && !cut)
                        {
                            cut = true;
                            Log.Warning("CGI {Script} of {Vhost} wrote more than its Content-Length {Length}; the rest is dropped", script, vhost.Name, head.ContentLength);
                        }

                        if (take > 0)
                        {
                            await response.Body.WriteAsync(pending[..take], stop);
                            sent += take;
                        }
                    }

                    var n = await process.Stdout.ReadAsync(buffer, stop);
                    if (n == 0)
                    {
                        break;
                    }

                    pending = buffer.AsMemory(0, n);
                }
            }
            catch (Exception e) when (e is IOException || (e is OperationCanceledException && stop.IsCancellationRequested))
            {
                // Timed out, or the client is gone (a failed write); the run's cleanup kills the group.
                if (timeout.IsCancellationRequested && !context.RequestAborted.IsCancellationRequested)
                {
                    Log.Warning("CGI {Script} of {Vhost} timed out after {Timeout} while sending its response: killed, connection aborted", script, vhost.Name, settings.Timeout);
                    context.Abort();
                }

                return;
            }

            if (Volatile.Read(ref _inputError) is { } inputError)
            {
                // The script was killed for a failed request body: its output ended early, not complete.
                Log.Warning("CGI {Script} of {Vhost}: the request body failed after the response started ({Reason}): connection aborted", script, vhost.Name, inputError.Message);
                context.Abort();
                return;
            }

            if (sendBody && head.ContentLength is { } declared && sent < declared)
            {
                Log.Warning("CGI {Script} of {Vhost} wrote {Sent} of its Content-Length {Length} bytes: connection aborted", script, vhost.Name, sent, declared);
                context.Abort();
                return;
            }

            // 3. The output is complete: finish the response now, then wait for the script to exit.
            try
            {
                await response.CompleteAsync();
                await process.Exited.WaitAsync(stop);
            }
            catch (IOException)
            {
                return; // the client left as the response ended
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                Log.Warning("CGI {Script} of {Vhost} closed its output but did not exit within {Timeout}: killed", script, vhost.Name, settings.Timeout);
                return;
            }

            var status = process.Reap();
            if (status != 0)
            {
                Log.Warning("CGI {Script} of {Vhost} (pid {Pid}) ended with {Status} after its response", script, vhost.Name, process.Pid, CgiProcess.DescribeStatus(status));
            }
        }

        /// <summary>The run was stopped before a header: the client left (nothing to answer) or the timeout (504).</summary>
        private async Task FailBeforeHeaderAsync()
        {
            if (context.RequestAborted.IsCancellationRequested)
            {
                return; // the client is gone; the group is already killed
            }

            Log.Warning("CGI {Script} of {Vhost} (pid {Pid}) sent no header within {Timeout}: killed", script, vhost.Name, process.Pid, settings.Timeout);
            if (!await AnswerInputErrorAsync())
            {
                await RequestHandler.WriteTextAsync(context, StatusCodes.Status504GatewayTimeout, TimeoutBody, close: false);
            }
        }

        private async Task EndedWithoutHeaderAsync(int received, Task stderr, CancellationToken stop)
        {
            var described = "its output closed";
            try
            {
                await process.Exited.WaitAsync(stop);
                described = CgiProcess.DescribeStatus(process.Reap());
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                await FailBeforeHeaderAsync();
                return;
            }

            // Its stderr (the likely explanation) is logged before the failure.
            await Task.WhenAny(stderr, Task.Delay(TimeSpan.FromSeconds(1), CancellationToken.None));
            if (await AnswerInputErrorAsync())
            {
                return;
            }

            Log.Warning(
                "CGI {Script} of {Vhost} (pid {Pid}) ended without a response header ({Status}, {Received} bytes of output)",
                script, vhost.Name, process.Pid, described, received);
            await RequestHandler.WriteTextAsync(context, StatusCodes.Status502BadGateway, BadGatewayBody, close: false);
        }

        private async Task BadGatewayAsync(string reason)
        {
            process.Kill();
            Log.Warning("CGI {Script} of {Vhost} (pid {Pid}): {Reason}; killed", script, vhost.Name, process.Pid, reason);
            await RequestHandler.WriteTextAsync(context, StatusCodes.Status502BadGateway, BadGatewayBody, close: false);
        }

        /// <summary>When reading the request body failed with a client error (413, 400), answers that instead.</summary>
        private async Task<bool> AnswerInputErrorAsync()
        {
            if (Volatile.Read(ref _inputError) is not BadHttpRequestException bad || context.Response.HasStarted)
            {
                return false;
            }

            await RequestHandler.WriteTextAsync(
                context, bad.StatusCode, Encoding.UTF8.GetBytes(bad.Message + "\n"), close: true);
            return true;
        }

        private async Task FeedStdinAsync(CancellationToken cancellationToken)
        {
            var canHaveBody = context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? true;
            if (!canHaveBody)
            {
                process.Stdin.Dispose();
                return;
            }

            // The body is read from its PipeReader, and a read still waiting when the run ends is ended with
            // CancelPendingRead, not a cancellation token: a read cancelled by its token left Kestrel's body reader
            // "reading", and its drain of the rest of the body after the response then failed with "Reading is already in
            // progress" (logged as an error; seen when a script answered without reading a large body).
            var body = context.Request.BodyReader;
            using var cancelRead = cancellationToken.UnsafeRegister(static state => EndPendingRead((System.IO.Pipelines.PipeReader)state!), body);
            try
            {
                while (true)
                {
                    var result = await body.ReadAsync(CancellationToken.None);
                    if (result.IsCanceled)
                    {
                        body.AdvanceTo(result.Buffer.Start);
                        return; // the run is over (or timed out, or the client left): nothing more to feed
                    }

                    var written = true;
                    try
                    {
                        foreach (var segment in result.Buffer)
                        {
                            if (!(written = await process.Stdin.WriteAsync(segment, cancellationToken)))
                                break;
                        }
                    }
                    finally
                    {
                        // Always, even when the write to the script was cancelled: the reader must not stay "reading".
                        body.AdvanceTo(result.Buffer.End);
                    }

                    if (!written)
                    {
                        return; // the script closed its stdin: the rest of the body is not read
                    }

                    if (result.IsCompleted)
                    {
                        break;
                    }
                }

                process.Stdin.Dispose(); // end of file for the script
            }
            catch (OperationCanceledException)
            {
                // The run is over (or timed out, or the client left): nothing more to feed. Or the connection was aborted
                // (the run's own abort for its output limit, say): Kestrel's body read then throws ConnectionAbortedException,
                // an OperationCanceledException, and it may do so before this token is cancelled, since Kestrel cancels
                // RequestAborted on the thread pool. Unfiltered, so that it never faults the feed (a CI run leaked a script's
                // descriptors that way); the run's stop kills the script.
            }
            catch (Exception e) when (e is IOException or BadHttpRequestException or ObjectDisposedException)
            {
                // Kill before the stdin pipe closes: the script must not mistake a truncated body for a complete one.
                Volatile.Write(ref _inputError, e);
                process.Kill();
            }
        }

        /// <summary>
        /// Ends a body read still waiting. On a connection already aborted (the run's own abort for its output limit, a
        /// timeout or a failed body; the client gone) Kestrel's reader throws instead: the read has ended with the
        /// connection, and the throw must not reach the run's clean-up, which cancels this (before, it skipped the kill and
        /// the disposal of the script's descriptors, and the reader stayed "reading").
        /// </summary>
        private static void EndPendingRead(System.IO.Pipelines.PipeReader body)
        {
            try
            {
                body.CancelPendingRead();
            }
            catch (Exception e) when (e is OperationCanceledException or InvalidOperationException or IOException)
            {
                // Aborted or completed: nothing waits on it any more.
            }
        }

        private async Task LogStderrAsync(CancellationToken cancellationToken)
        {
            var buffer = new byte[4096];
            var line = new byte[MaxStderrLineBytes];
            var length = 0;
            var truncated = false;
            var lines = 0;
            try
            {
                while (true)
                {
                    var n = await process.Stderr.ReadAsync(buffer, cancellationToken);
                    if (n == 0)
                    {
                        break;
                    }

                    foreach (var b in buffer.AsSpan(0, n))
                    {
                        if (b == '\n')
                        {
                            Emit(line.AsSpan(0, length), truncated, ref lines);
                            length = 0;
                            truncated = false;
                        }
                        else if (length < line.Length)
                        {
                            line[length++] = b;
                        }
                        else
                        {
                            truncated = true;
                        }
                    }
                }
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException)
            {
                // Stopped at the end of the run (a process outside the group may still hold stderr).
            }

            if (length > 0)
            {
                Emit(line.AsSpan(0, length), truncated, ref lines);
            }
        }

        private void Emit(ReadOnlySpan<byte> raw, bool truncated, ref int lines)
        {
            lines++;
            if (lines > MaxStderrLines)
            {
                if (lines == MaxStderrLines + 1)
                {
                    Log.Warning("CGI {Script} of {Vhost} (pid {Pid}): further stderr output not logged", script, vhost.Name, process.Pid);
                }

                return;
            }

            if (raw.EndsWith("\r"u8))
            {
                raw = raw[..^1];
            }

            // No control characters into the log (no forged log lines, no terminal escapes).
            var text = Encoding.UTF8.GetString(raw);
            var clean = string.Create(text.Length, text, static (span, source) =>
            {
                for (var i = 0; i < source.Length; i++)
                {
                    var c = source[i];
                    span[i] = char.IsControl(c) && c != '\t' ? '?' : c;
                }
            });
            Log.Warning(
                "CGI {Script} of {Vhost} (pid {Pid}) stderr: {Line}{Truncated}",
                script, vhost.Name, process.Pid, clean, truncated ? " [truncated]" : string.Empty);
        }
    }

    /// <summary>What one run of a vhost's script is held to: its timeout (<c>cgiTimeout</c>) and the worker's own limits.</summary>
    private sealed record CgiRunLimits(TimeSpan Timeout, int MaxProcesses, long? MaxOutputBytes);
}
