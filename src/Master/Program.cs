using System.Runtime.InteropServices;
using Dispatch.Master.Config;
using Dispatch.Master.Files;
using Dispatch.Master.Operations;
using Dispatch.Platform.Cgroups;
using Dispatch.Platform.Interop;
using Dispatch.Platform.Spawn;
using Serilog;
using Serilog.Events;

namespace Dispatch.Master;

internal static class Program
{
    private static Task<int> Main(string[] args)
    {
        // Every command: the native layer's struct layouts are x86_64's (see NativeLayout).
        if (NativeLayout.Unsupported() is { } unsupported)
        {
            Console.Error.WriteLine(unsupported);
            return Task.FromResult(69); // EX_UNAVAILABLE
        }

        return Cli.InvokeAsync(args);
    }

    /// <summary><c>check</c>: validates the config as <c>run</c> would, like <c>nginx -t</c>.</summary>
    internal static int Check(string configPath)
    {
        var (config, errors) = ConfigLoader.Load(configPath);
        foreach (var e in errors)
            Console.Error.WriteLine(e);
        if (config is not null)
        {
            foreach (var (path, reason) in Cgroups.Unavailable(config.Pools.Values, Dispatch.Platform.Cgroups.CgroupHost.Detect()))
                Console.Error.WriteLine($"{config.SourcePath}: {path}: warning: {reason}; the master will run this pool without that limit (\"cgroup\": {{ \"required\": true }} makes this an error)");
        }

        Console.WriteLine(errors.Count == 0 ? $"{config!.SourcePath}: configuration OK" : $"{errors.Count} error(s); configuration rejected");
        return errors.Count == 0 ? Cli.ExitOk : Cli.ExitFailed;
    }

    /// <summary><c>run</c>: the master, in the foreground. <paramref name="signals"/> were installed before any Console use.</summary>
    internal static async Task<int> RunAsync(string configPath, MasterSignals signals)
    {
        var (config, errors) = ConfigLoader.Load(configPath);
        if (Libc.GetEUid() != 0)
        {
            Console.Error.WriteLine("Dispatch's master must run as root: it binds the ports and starts every tenant's worker under the tenant's own uid, jailed. Run it with sudo (see README).");
            return Cli.ExitNotRoot;
        }

        var log = CreateLogger(config?.Log);
        try
        {
            if (config is null)
            {
                foreach (var e in errors)
                    log.Fatal("Configuration error: {Error}", e.ToString());
                return Cli.ExitConfig;
            }

            var unsafePath = RuntimePaths.CodePaths.Select(PathSafety.CheckRootOwned).FirstOrDefault(why => why is not null);
            if (unsafePath is not null)
            {
                log.Fatal("Refusing to start from {AppDirectory}: {Reason}. Install the binaries in a root-owned directory no one else can write (the run script and tests publish to one).", RuntimePaths.AppDirectory, unsafePath);
                return Cli.ExitConfig;
            }

            if (!File.Exists(Spawner.OpenSslConfigFile))
            {
                // Without it OpenSSL would fall back to its defaults (CBC suites, more groups) in the openssl engine
                // and the passthrough workers, silently.
                log.Fatal("Refusing to start: {File} is missing beside the binaries (the TLS policy of the OpenSSL-based engines; scripts/publish.sh ships it)", Spawner.OpenSslConfigFile);
                return Cli.ExitConfig;
            }

            var identities = new List<(string Who, uint Uid, uint[] Gids)> { ("dispatcher", config.Dispatcher.Uid, [config.Dispatcher.Gid]) };
            identities.AddRange(config.Pools.Values.Select(p => ($"pool '{p.Name}'", p.Uid, (uint[])[p.Gid, .. p.Groups])));
            foreach (var (who, uid, gids) in identities)
            {
                var why = RuntimePaths.CodePaths.Select(p => PathSafety.CheckTraversable(p, uid, gids)).FirstOrDefault(w => w is not null);
                if (why is not null)
                {
                    log.Fatal("Refusing to start: the {Who} could not load its binaries after dropping privileges: {Reason}", who, why);
                    return Cli.ExitConfig;
                }
            }

            Spawner.LogLevel = config.Log.Level;
            if (signals.WereIgnored.Count > 0)
                log.Information("{Signals} were ignored when the master was started (as in a background job of a script); the master handles them", string.Join(", ", signals.WereIgnored));
            if (signals.StillIgnored.Count > 0)
                log.Error("{Signals} are still ignored: the master cannot act on them", string.Join(", ", signals.StillIgnored));
            using var master = new MasterService(config, log);
            signals.Attach(master);

            // reload.onChange, debounced: editors and panels write in bursts (and sometimes half a file first). Off, an
            // edit waits for SIGHUP or `dispatch reload` (the config in force decides, so a reload turns it on or off).
            using var watcher = new FileSystemWatcher(Path.GetDirectoryName(config.SourcePath)!, Path.GetFileName(config.SourcePath))
            {
                NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.Size | NotifyFilters.CreationTime,
            };
            Timer? debounce = null;
            void Changed(object? sender, FileSystemEventArgs e)
            {
                if (!master.ReloadsOnChange)
                {
                    log.Debug("{File} changed; not reloaded (reload.onChange is false): SIGHUP or dispatch reload applies it", e.FullPath);
                    return;
                }

                var t = new Timer(_ => master.ReloadInBackground("file changed"), null, Timeout.Infinite, Timeout.Infinite);
                Interlocked.Exchange(ref debounce, t)?.Dispose();
                t.Change(500, Timeout.Infinite);
            }

            watcher.Changed += Changed;
            watcher.Created += Changed;
            watcher.Renamed += (s, e) => Changed(s, e);
            watcher.EnableRaisingEvents = true;
            // The include (conf.d) directory: any *.json file created, changed, renamed or deleted.
            using var includeWatcher = config.Included is { } included ? new FileSystemWatcher(included.Directory, "*.json")
            {
                NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.Size | NotifyFilters.CreationTime,
            } : null;
            if (includeWatcher is not null)
            {
                includeWatcher.Changed += Changed;
                includeWatcher.Created += Changed;
                includeWatcher.Deleted += Changed;
                includeWatcher.Renamed += (s, e) => Changed(s, e);
                includeWatcher.EnableRaisingEvents = true;
                log.Information("Including {Included}", config.Included!.ToString());
            }
            log.Information("Master {Pid} starting with {Config}: {Vhosts} vhosts in {Pools} pools", Environment.ProcessId, config.SourcePath, config.Vhosts.Count, config.Pools.Count);
            try
            {
                return await master.RunAsync().ConfigureAwait(false);
            }
            finally
            {
                signals.Dispose(); // detached before the service is disposed: a late signal changes nothing
            }
        }
        finally
        {
            await Log.CloseAndFlushAsync().ConfigureAwait(false);
            log.Dispose();
        }
    }

    /// <summary><c>status</c>, <c>reload</c>, <c>upgrade</c>, <c>reopen</c>: one command over the control socket.</summary>
    /// <param name="command">The control socket's command line (<c>status --json</c> included).</param>
    /// <param name="configPath">The config whose <c>control.socket</c> names the socket.</param>
    /// <param name="configGiven">Whether <paramref name="configPath"/> was chosen (else a missing default file means the default socket).</param>
    /// <param name="socket">The socket, overriding the config's.</param>
    internal static async Task<int> ControlClientAsync(string command, string configPath, bool configGiven, string? socket)
    {
        if (socket is null && (configGiven || File.Exists(configPath)))
        {
            try
            {
                using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(configPath), new System.Text.Json.JsonDocumentOptions { CommentHandling = System.Text.Json.JsonCommentHandling.Skip, AllowTrailingCommas = true });
                if (doc.RootElement.ValueKind == System.Text.Json.JsonValueKind.Object && doc.RootElement.TryGetProperty("control", out var control) && control.ValueKind == System.Text.Json.JsonValueKind.Object && control.TryGetProperty("socket", out var path) && path.ValueKind == System.Text.Json.JsonValueKind.String)
                    socket = path.GetString();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
            {
                Console.Error.WriteLine($"{configPath}: {e.Message}");
                return Cli.ExitFailed;
            }
        }

        socket ??= DefaultControlSocket;
        try
        {
            var answer = await Operations.ControlServer.AskAsync(socket, command).ConfigureAwait(false);
            Console.Write(answer);
            return answer.StartsWith("refused", StringComparison.Ordinal) || answer.StartsWith("failed", StringComparison.Ordinal) || answer.StartsWith("rejected", StringComparison.Ordinal) || answer.StartsWith("unknown command", StringComparison.Ordinal) ? Cli.ExitFailed : Cli.ExitOk;
        }
        catch (System.Net.Sockets.SocketException e)
        {
            Console.Error.WriteLine($"Cannot reach the master at {socket}: {e.Message} (is it running? is this root?)");
            return Cli.ExitFailed;
        }
    }

    /// <summary>The control socket when the config names none (<c>control.socket</c>'s default).</summary>
    internal const string DefaultControlSocket = "/run/dispatch/control.sock";

    private static Serilog.Core.Logger CreateLogger(LogConfig? config)
    {
        var level = Enum.TryParse<LogEventLevel>(config?.Level, out var l) ? l : LogEventLevel.Information;
        var lc = new LoggerConfiguration().MinimumLevel.Is(level);
        var json = new Serilog.Formatting.Json.JsonFormatter(renderMessage: true, formatProvider: System.Globalization.CultureInfo.InvariantCulture);
        const string ConsoleTemplate = "[{Timestamp:HH:mm:ss.fff} {Level:u3}] {Message:lj}{NewLine}{Exception}";
        // Under systemd with the output in the journal, each line carries its priority (journalctl -p).
        var journal = config?.Console != "none" && Operations.JournalPriorityFormatter.IsJournalStream(Environment.GetEnvironmentVariable("JOURNAL_STREAM"));
        lc = (config?.Console, journal) switch
        {
            ("none", _) => lc,
            ("json", false) => lc.WriteTo.Console(json),
            ("json", true) => lc.WriteTo.Console(new Operations.JournalPriorityFormatter(json)),
            (_, false) => lc.WriteTo.Console(outputTemplate: ConsoleTemplate, formatProvider: System.Globalization.CultureInfo.InvariantCulture),
            (_, true) => lc.WriteTo.Logger(console => console
                .MinimumLevel.Verbose()
                .Enrich.With<Operations.JournalPriorityEnricher>()
                .WriteTo.Console(outputTemplate: Operations.JournalPriorityEnricher.Template(ConsoleTemplate), formatProvider: System.Globalization.CultureInfo.InvariantCulture)),
        };
        if (config?.File is { } file)
        {
            Serilog.Formatting.ITextFormatter formatter = config.Format == "json"
                ? json
                : new Serilog.Formatting.Display.MessageTemplateTextFormatter("{Timestamp:yyyy-MM-dd HH:mm:ss.fff zzz} [{Level:u3}] {Message:lj}{NewLine}{Exception}", System.Globalization.CultureInfo.InvariantCulture);
            ReopenableFile = new Operations.ReopenableFileSink(file, formatter);
            lc = lc.WriteTo.Sink(ReopenableFile);
        }

        return lc.CreateLogger();
    }

    /// <summary>The master's own log file, reopened on SIGUSR1 like the tenants' logs.</summary>
    internal static Operations.ReopenableFileSink? ReopenableFile { get; private set; }
}
