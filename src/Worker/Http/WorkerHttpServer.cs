using System.IO.Pipelines;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Threading.Channels;
using Dispatch.Platform.Hosting;
using Dispatch.Wire.Payloads;
using Dispatch.Worker.Tls;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Serilog.Core;

namespace Dispatch.Worker.Http;

/// <summary>
/// Kestrel serving HTTP/1.1 and HTTP/2 on sockets handed over by the dispatcher, with no network listener of its own.
/// </summary>
/// <remarks>
/// <para>Two endpoints (<see cref="HandedEndPoint"/>): HTTP/1.x only, and HTTP/2 only (cleartext HTTP/2 with prior
/// knowledge needs an endpoint that speaks nothing else). <see cref="TryEnqueue"/> queues a socket for the endpoint of
/// its <see cref="HandedConnectionInfo.Protocol"/>; Kestrel's accept loop takes it from there. Connection middleware
/// replays the bytes the dispatcher already read before the socket's own data, and counts open connections.</para>
/// <para>The host is minimal: a bare <see cref="HostBuilder"/> with no configuration sources (no appsettings, no
/// environment variables: <c>SuppressEnvironmentConfiguration</c>), hosting-startup assemblies disabled, no console
/// lifetime (the worker owns its signals), Kestrel without the socket transport, no Server header, and logging only to
/// the given Serilog logger at Warning and above.</para>
/// </remarks>
public sealed class WorkerHttpServer : IAsyncDisposable
{
    /// <summary>What the worker's lines about single connections are about (<see cref="ConnectionLogBudget"/>'s count line).</summary>
    public const string ConnectionLogWhat = "TLS alerts, broken TLS records, send timeouts, refused while stopping";

    private readonly Channel<PendingConnection> _http1 = Channel.CreateUnbounded<PendingConnection>();
    private readonly Channel<PendingConnection> _http2 = Channel.CreateUnbounded<PendingConnection>();
    private readonly Channel<PendingConnection> _tls = Channel.CreateUnbounded<PendingConnection>();
    private TenantCertificates? _certificates;
    private SendWatchdog? _sendWatchdog;
    private ConnectionLogBudget _connectionLog = null!;
    private ConnectionAdmission _admission = null!;
    private readonly AddressConnections _addresses = new();
    private readonly CgiHandler _cgi;
    private Serilog.ILogger _log = Serilog.Core.Logger.None;
    private ProxyHandler? _proxy;
    private FastCgi.FastCgiHandler? _fastCgi;
    private FastCgi.PhpFpmSupervisors? _phpFpm;
    private IHost? _host;
    private readonly ConnectionGauge _openConnections = new();
    private volatile bool _stopping;
    private Task? _stopTask;

    // The stop's deadline: Kestrel aborts what is still open when this fires. A later StopAsync may bring it closer.
    private readonly CancellationTokenSource _stopTimeout = new();
    private readonly Lock _stopGate = new();
    private long _stopDeadline = long.MaxValue;
    private int _disposed;

    private WorkerHttpServer(CgiHandler cgi)
    {
        _cgi = cgi;
    }

    /// <summary>ASP.NET Core's per-request hosting log category, turned off (see StartAsync).</summary>
    internal const string HostingDiagnosticsCategory = "Microsoft.AspNetCore.Hosting.Diagnostics";

    /// <summary>The host's services (tests).</summary>
    internal IServiceProvider Services => _host!.Services;

    /// <summary>Connections handed over and not yet finished (queued or being served).</summary>
    public int OpenConnections => _openConnections.Open;

    /// <summary>Connections whose response waits for its client to read (tests).</summary>
    internal int WaitingSends => _sendWatchdog?.Waiting ?? 0;

    /// <summary>Connections open per client address (tests: counted while open, forgotten when ended).</summary>
    internal AddressConnections Addresses => _addresses;

    /// <summary>The most connections open at once since the last call (see <see cref="ConnectionGauge.TakePeak"/>).</summary>
    public int TakePeakConnections() => _openConnections.TakePeak();

    /// <summary>Calls <paramref name="wake"/> on each connection that finds none open (<see cref="ConnectionGauge.Busy"/>).</summary>
    public void OnFirstConnection(Action wake) => _openConnections.Busy = wake;

    /// <summary>CGI scripts running now.</summary>
    public int RunningCgiScripts => _cgi.Running;

    /// <summary>The vhosts served, as configured (their traffic counters: <see cref="Vhost.Traffic"/>).</summary>
    internal IReadOnlyList<Vhost> Vhosts { get; private init; } = [];

    /// <summary>Starts Kestrel for <paramref name="vhosts"/>; errors are logged to <paramref name="log"/> (Warning and above).</summary>
    /// <exception cref="ArgumentException">A vhost has an invalid name, a duplicate name or alias, a relative root, or
    /// an invalid CGI mapping (prefix not an absolute URL path, relative directory, prefix mapped twice), or an invalid
    /// proxy mapping (prefix not an absolute URL path or mapped twice, upstream not a Unix socket path or a loopback TCP
    /// port, prefix overlapping a CGI prefix).</exception>
    public static Task<WorkerHttpServer> StartAsync(IReadOnlyList<WorkerVhost> vhosts, Serilog.ILogger log, CancellationToken cancellationToken) =>
        StartAsync(vhosts, log, accessLogFor: null, cancellationToken);

    /// <summary>
    /// Starts Kestrel for <paramref name="vhosts"/>. Access-log events (Information, SourceContext
    /// <c>Dispatch.Worker.Http.AccessLog</c>) of a vhost go to <paramref name="accessLogFor"/>(vhost) when given
    /// (per-tenant log files), otherwise — and for requests that match no vhost — to <paramref name="log"/>.
    /// </summary>
    public static Task<WorkerHttpServer> StartAsync(
        IReadOnlyList<WorkerVhost> vhosts,
        Serilog.ILogger log,
        Func<WorkerVhost, Serilog.ILogger>? accessLogFor,
        CancellationToken cancellationToken) =>
        StartAsync(vhosts, log, accessLogFor, errorLogFor: null, cancellationToken);

    /// <summary>
    /// As above; besides, the problems of a vhost (CGI stderr and failures, proxy errors, unreadable files, 500s) go to
    /// <paramref name="errorLogFor"/>(vhost) when it returns a logger (see <see cref="RequestErrors"/>), otherwise to
    /// <paramref name="log"/>.
    /// </summary>
    public static Task<WorkerHttpServer> StartAsync(
        IReadOnlyList<WorkerVhost> vhosts,
        Serilog.ILogger log,
        Func<WorkerVhost, Serilog.ILogger>? accessLogFor,
        Func<WorkerVhost, Serilog.ILogger?>? errorLogFor,
        CancellationToken cancellationToken) =>
        StartAsync(vhosts, log, accessLogFor, errorLogFor, WorkerTimeouts.Default, cancellationToken);

    /// <summary>
    /// As above, with the pool's <paramref name="timeouts"/>: the send timeout (a flush that waits that long aborts the
    /// connection), Kestrel's keep-alive and request-headers timeouts and its minimum request-body and response rates.
    /// <paramref name="connectionLog"/>: the budget of lines about single connections (the server disposes it; null: a
    /// budget of <see cref="ConnectionLogBudget.DefaultBurst"/> then <see cref="ConnectionLogBudget.DefaultPerSecond"/> a second).
    /// </summary>
    public static async Task<WorkerHttpServer> StartAsync(
        IReadOnlyList<WorkerVhost> vhosts,
        Serilog.ILogger log,
        Func<WorkerVhost, Serilog.ILogger>? accessLogFor,
        Func<WorkerVhost, Serilog.ILogger?>? errorLogFor,
        WorkerTimeouts timeouts,
        CancellationToken cancellationToken,
        Func<WorkerVhost, CgiLimits>? cgiLimitsFor = null,
        ConnectionAdmission? admission = null,
        ConnectionLogBudget? connectionLog = null)
    {
        ArgumentNullException.ThrowIfNull(timeouts);
        ArgumentNullException.ThrowIfNull(vhosts);
        ArgumentNullException.ThrowIfNull(log);

        var defaultAccessLog = log.ForContext(Constants.SourceContextPropertyName, RequestHandler.AccessLogSourceContext);
        var table = new VhostTable(vhosts.Select(settings =>
        {
            ArgumentNullException.ThrowIfNull(settings);
            var accessLog = accessLogFor?.Invoke(settings)
                .ForContext(Constants.SourceContextPropertyName, RequestHandler.AccessLogSourceContext) ?? defaultAccessLog;
            CgiHandler.NormalizeMappings(settings.Name, settings.Cgi);
            ProxyHandler.NormalizeMappings(settings);

            FastCgi.FastCgiHandler.Check(settings);

            var files = new ConfinedFileProvider(settings.Root, settings.Cgi.Select(m => m.Directory));
            var errorLog = errorLogFor?.Invoke(settings)?.ForContext(RequestErrors.VhostProperty, settings.Name);
            return new Vhost(settings, files, accessLog, errorLog, cgiLimitsFor?.Invoke(settings));
        }));
        var handler = new RequestHandler(table, defaultAccessLog, log);
        var cgi = new CgiHandler(log);
        var proxy = new ProxyHandler(log);
        var fastCgi = new FastCgi.FastCgiHandler(log);
        var phpFpm = new FastCgi.PhpFpmSupervisors(log);
        var server = new WorkerHttpServer(cgi) { _certificates = new TenantCertificates(vhosts, log), _proxy = proxy, _fastCgi = fastCgi, _phpFpm = phpFpm, _log = log, Vhosts = table.All };
        server._connectionLog = connectionLog ?? new ConnectionLogBudget(log, ConnectionLogWhat);
        server._sendWatchdog = new SendWatchdog(timeouts.Send, log, server._connectionLog);
        server._admission = admission ?? new ConnectionAdmission(ConnectionAdmission.DefaultLimit, ConnectionAdmission.DefaultHold);
        try
        {
            // php-fpm started by this worker (fastcgi.spawn): before Kestrel, so the first request finds it.
            await phpFpm.StartAsync(table.All, fastCgi, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await phpFpm.DisposeAsync().ConfigureAwait(false);
            fastCgi.Dispose();
            server._sendWatchdog?.Dispose();
            server._admission.Dispose();
            server._connectionLog.Dispose();
            throw;
        }

        var host = new HostBuilder()
            .UseContentRoot(AppContext.BaseDirectory)
            .ConfigureServices(services =>
            {
                // HostBuilder registers ConsoleLifetime, which would take SIGTERM/SIGINT from the worker.
                services.AddSingleton<IHostLifetime, PassiveHostLifetime>();
                services.Configure<HostOptions>(options => options.ShutdownTimeout = Timeout.InfiniteTimeSpan);
                services.AddLogging(logging =>
                {
                    logging.ClearProviders();
                    logging.SetMinimumLevel(SerilogLoggerProvider.MinimumLevel);
                    logging.AddProvider(new SerilogLoggerProvider(log));

                    // StaticFiles warns about unsatisfiable ranges: client behaviour, not a server problem.
                    logging.AddFilter("Microsoft.AspNetCore.StaticFiles", LogLevel.Error);

                    // Request start/finish lines (the access log says it) and a startup exception StartAsync throws
                    // anyway; enabled at any level, this category makes Hosting build an Activity and a log scope
                    // per request (half the bytes a static request allocated).
                    logging.AddFilter(HostingDiagnosticsCategory, LogLevel.None);

                    // YARP reports every failed exchange; the proxy handler logs each once, in our words, to the
                    // vhost's error log (and stays silent for a client that left).
                    logging.AddFilter("Yarp", LogLevel.None);
                });

                // Registered before UseKestrelCore, whose TryAdd then registers no socket transport.
                services.AddSingleton<IConnectionListenerFactory>(provider => new HandedConnectionListenerFactory(
                    server.QueueFor, server.ConnectionFinished, server._admission, server._addresses, provider.GetRequiredService<ILoggerFactory>(), log));
                services.AddDirectoryBrowser();

                // YARP's forwarder (direct forwarding: no routes, no clusters, no configuration of its own).
                services.AddHttpForwarder();
            })
            .ConfigureWebHost(
                web =>
                {
                    web.UseSetting(WebHostDefaults.PreventHostingStartupKey, "true");
                    web.UseKestrelCore();
                    web.ConfigureKestrel(kestrel =>
                    {
                        kestrel.AddServerHeader = false;

                        // What an HTTP/2 stream's (and a passthrough TLS connection's) output holds unsent before a
                        // write waits (default 64 KiB): held for as long as a client does not read (docs/floods.md).
                        kestrel.Limits.MaxResponseBufferSize = HandedConnectionListenerFactory.MaxWriteBufferSize;
                        kestrel.Limits.KeepAliveTimeout = timeouts.KeepAlive;
                        kestrel.Limits.RequestHeadersTimeout = timeouts.RequestHeaders;
                        kestrel.Limits.MinRequestBodyDataRate = timeouts.MinRequestBodyRate > 0 ? new MinDataRate(timeouts.MinRequestBodyRate, TimeSpan.FromSeconds(5)) : null;
                        kestrel.Limits.MinResponseDataRate = timeouts.MinResponseRate > 0 ? new MinDataRate(timeouts.MinResponseRate, TimeSpan.FromSeconds(5)) : null;

                        // TLS ends in the dispatcher: h2 arrives in cleartext with ":scheme https".
                        kestrel.AllowAlternateSchemes = true;
                        kestrel.Listen(new HandedEndPoint(HandedProtocol.Http1), listen =>
                        {
                            listen.Protocols = HttpProtocols.Http1;
                            listen.Use(server.ConnectionMiddleware);
                        });
                        kestrel.Listen(new HandedEndPoint(HandedProtocol.Http2), listen =>
                        {
                            listen.Protocols = HttpProtocols.Http2;
                            listen.Use(server.ConnectionMiddleware);
                        });
                        if (server._certificates.Any)
                        {
                            // Passthrough: the ClientHello is among the replayed bytes, so the replay runs first.
                            var certificates = server._certificates;
                            kestrel.Listen(new HandedEndPoint(HandedProtocol.Tls), listen =>
                            {
                                listen.Protocols = HttpProtocols.Http1AndHttp2;
                                listen.Use(server.ConnectionMiddleware);
                                listen.UseHttps(new TlsHandshakeCallbackOptions
                                {
                                    HandshakeTimeout = TimeSpan.FromSeconds(10),
                                    OnConnection = context =>
                                    {
                                        var options = certificates.OptionsFor(context.ClientHelloInfo.ServerName)
                                            ?? throw new AuthenticationException($"no certificate for '{context.ClientHelloInfo.ServerName}'");
                                        return ValueTask.FromResult(options);
                                    },
                                });
                            });
                        }
                    });
                    web.Configure(app =>
                    {
                        RequestHandler.BuildPipelines(app, table, cgi, proxy, fastCgi, phpFpm.SocketFor, log);
                        app.Run(handler.InvokeAsync);
                    });
                },
                options => options.SuppressEnvironmentConfiguration = true)
            .Build();

        server._host = host;
        try
        {
            await host.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            server._stopping = true;
            host.Dispose();
            await phpFpm.DisposeAsync().ConfigureAwait(false);
            fastCgi.Dispose();
            throw;
        }

        return server;
    }

    /// <summary>
    /// Queues a connection. On <see langword="true"/> the server owns <paramref name="socket"/> and the memory behind
    /// <paramref name="initialBytes"/> (the bytes already read from it, replayed first; nothing is returned to a pool).
    /// On <see langword="false"/> (stopping or stopped) nothing was taken: the caller still owns and must close the socket.
    /// </summary>
    public bool TryEnqueue(Socket socket, ReadOnlyMemory<byte> initialBytes, HandedConnectionInfo info)
    {
        ArgumentNullException.ThrowIfNull(socket);
        return TryEnqueue(new PendingConnection(null, socket, initialBytes, info));
    }

    /// <summary>
    /// Queues a connection by its descriptor, as <see cref="TryEnqueue(Socket, ReadOnlyMemory{byte}, HandedConnectionInfo)"/>
    /// does a socket: the socket is made when Kestrel takes the connection (the channel's thread does not pay for it).
    /// On <see langword="false"/> the caller still owns <paramref name="handle"/>.
    /// </summary>
    public bool TryEnqueue(SafeSocketHandle handle, ReadOnlyMemory<byte> initialBytes, HandedConnectionInfo info)
    {
        ArgumentNullException.ThrowIfNull(handle);
        return TryEnqueue(new PendingConnection(handle, null, initialBytes, info));
    }

    private bool TryEnqueue(PendingConnection pending)
    {
        var info = pending.Info;
        ArgumentNullException.ThrowIfNull(info);
        if (_stopping)
        {
            // The dispatcher may hand a stopping worker connections until it hears of the stop: one line each, within
            // the budget of lines about single connections (a flood's worth would otherwise be a flood of lines).
            if (_connectionLog.Allow())
                _log.Warning("Connection {ConnectionId} refused: the server is stopping", info.ConnectionId);
            return false;
        }

        _openConnections.Enter();
        var queue = info.Protocol switch
        {
            HandedProtocol.Http2 => _http2,
            HandedProtocol.Tls => _tls,
            _ => _http1,
        };
        if (!queue.Writer.TryWrite(pending))
        {
            _openConnections.Leave();
            return false;
        }

        return true;
    }

    /// <summary>
    /// Stops taking connections and lets open requests finish for up to <paramref name="grace"/>
    /// (<see cref="Timeout.InfiniteTimeSpan"/>: until they are done); then aborts what is left. Idle keep-alive
    /// connections are closed at once; HTTP/2 connections get GOAWAY. Idempotent, except that a later call with a
    /// shorter grace brings the abort closer (the master's Stop to a worker already finishing on its own).
    /// </summary>
    public Task StopAsync(TimeSpan grace)
    {
        LimitStop(grace);
        var completion = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var existing = Interlocked.CompareExchange(ref _stopTask, completion.Task, null);
        if (existing is not null)
        {
            return existing;
        }

        _ = StopCoreAsync(completion);
        return completion.Task;
    }

    private void LimitStop(TimeSpan grace)
    {
        if (grace == Timeout.InfiniteTimeSpan)
        {
            return;
        }

        var ms = (long)Math.Clamp(grace.TotalMilliseconds, 0, int.MaxValue - 1);
        lock (_stopGate)
        {
            var deadline = Environment.TickCount64 + ms;
            if (deadline >= _stopDeadline)
            {
                return;
            }

            _stopDeadline = deadline;
            _stopTimeout.CancelAfter(TimeSpan.FromMilliseconds(ms));
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await StopAsync(TimeSpan.Zero).ConfigureAwait(false);
        if (_host is IAsyncDisposable asyncDisposable)
        {
            await asyncDisposable.DisposeAsync().ConfigureAwait(false);
        }
        else
        {
            _host?.Dispose();
        }

        DrainQueues();
        _sendWatchdog?.Dispose();
        _admission.Dispose();
        _connectionLog.Dispose();
        _certificates?.Dispose();
        _proxy?.Dispose();
        if (_phpFpm is not null)
        {
            await _phpFpm.DisposeAsync().ConfigureAwait(false);
        }

        _fastCgi?.Dispose();
    }

    private async Task StopCoreAsync(TaskCompletionSource completion)
    {
        try
        {
            _stopping = true;
            _http1.Writer.TryComplete();
            _http2.Writer.TryComplete();
            _tls.Writer.TryComplete();
            if (_host is not null)
            {
                try
                {
                    await _host.StopAsync(_stopTimeout.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    // Grace exhausted: Kestrel has aborted the remaining connections.
                }
            }

            // Aborted requests kill their scripts themselves; this covers anything still running regardless.
            _cgi.KillAll();
            DrainQueues();
            completion.TrySetResult();
        }
        catch (Exception e)
        {
            completion.TrySetException(e);
        }
    }

    private ChannelReader<PendingConnection> QueueFor(HandedProtocol protocol) => protocol switch
    {
        HandedProtocol.Http2 => _http2.Reader,
        HandedProtocol.Tls => _tls.Reader,
        _ => _http1.Reader,
    };

    private void ConnectionFinished() => _openConnections.Leave();

    private void DrainQueues()
    {
        foreach (var queue in new[] { _http1, _http2, _tls })
        {
            while (queue.Reader.TryRead(out var pending))
            {
                pending.Close();
                ConnectionFinished();
            }
        }
    }

    /// <summary>
    /// Outermost connection middleware: counts the connection, replays the initial bytes and, for a handed TLS session,
    /// runs the record layer over the result (the initial bytes are then ciphertext).
    /// </summary>
    private ConnectionDelegate ConnectionMiddleware(ConnectionDelegate next) => async connection =>
    {
        try
        {
            var feature = connection.Features.Get<IHandedConnectionFeature>() as HandedConnectionFeature;
            var initialBytes = feature is null ? default : feature.TakeInitialBytes();
            var session = feature?.Info.Session;
            var admission = feature?.Admission;
            var transport = connection.Transport;
            // Plain HTTP/1: the output goes straight to the socket (static files with sendfile), not through the
            // transport's pipe and send loop (DirectSocketWriter). TLS keeps the transport's: under the record layer
            // the direct output cost 5 to 8 % more CPU per request and a fifth of a download's throughput (the
            // transport's send loop overlaps the next record's encryption; docs/floods.md). Plain HTTP/2 too.
            var plain = session is null && feature?.Info.Protocol is HandedProtocol.Http1;
            using var direct = plain && feature?.Socket is { } socket
                ? new DirectSocketWriter(socket, transport.Output, connection)
                : null;
            if (direct is not null)
            {
                connection.Transport = new DuplexPipe(transport.Input, direct);
            }

            using var watch = _sendWatchdog!.Add(connection);
            var input = initialBytes.IsEmpty ? transport.Input : new PrefixedPipeReader(initialBytes, transport.Input);
            connection.Transport = new DuplexPipe(admission is null ? input : new AdmissionPipeReader(input, admission), watch.Output);

            // The access log's byte count asks it whether the socket still takes bytes (CountingResponseBody).
            connection.Features.Set(watch.Output);

            try
            {
                if (session is not null)
                {
                    await TlsRecordLayer.ServeAsync(connection, session, _log, next, feature!.Info.TlsPlaintext, _connectionLog).ConfigureAwait(false);
                }
                else if (feature?.Info.Protocol is HandedProtocol.Http1)
                {
                    // Plain HTTP/1: a client that half-closes after its request still gets its response.
                    await using var halfClose = new HalfCloseConnectionContext(connection);
                    await next(halfClose).ConfigureAwait(false);
                }
                else
                {
                    await next(connection).ConfigureAwait(false);
                }
            }
            finally
            {
                connection.Transport = transport;
            }
        }
        finally
        {
            if (connection.Features.Get<IHandedConnectionFeature>() is HandedConnectionFeature { } handed)
            {
                handed.Admission?.Release();
                if (handed.CountedAs is { } address)
                {
                    _addresses.Remove(address);
                }
            }

            ConnectionFinished();
        }
    };

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }

    /// <summary>Starts and stops with the host, and leaves process signals alone.</summary>
    private sealed class PassiveHostLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
