using System.Runtime.InteropServices;
using Dispatch.Master.Config;
using Dispatch.Protocol.Hosting;
using Dispatch.Protocol.Interop;
using Serilog;
using Serilog.Events;

namespace Dispatch.Master;

internal static class Program
{
    private const string Usage = """
        Usage:
          Master --config FILE          run Dispatch (as root)
          Master check --config FILE    validate FILE and exit non-zero on any error (like nginx -t)
          Master status [--json] [--config FILE | --socket PATH]
                                        the running master's pools, workers, vhosts, certificates, last reload
          Master reload|upgrade [--config FILE | --socket PATH]
                                        the same as SIGHUP / SIGUSR2, with the result printed
        (the control socket is control.socket in FILE, by default /run/dispatch/control.sock; root only)
        """;

    private static async Task<int> Main(string[] args)
    {
        if (NativeLayout.Unsupported() is { } unsupported)
        {
            Console.Error.WriteLine(unsupported);
            return 69; // EX_UNAVAILABLE
        }

        if (args.Length > 0 && args[0] is "status" or "reload" or "upgrade")
            return await ControlClientAsync(args).ConfigureAwait(false);
        var check = args.Length > 0 && args[0] == "check";
        var rest = check ? args[1..] : args;
        if (rest is not ["--config", var configPath])
        {
            Console.Error.WriteLine(Usage);
            return 64;
        }

        // First, before any Console use: a signal from now on is never lost (see MasterSignals).
        using var signals = check ? null : MasterSignals.Install();
        var (config, errors) = ConfigLoader.Load(configPath);
        if (check)
        {
            foreach (var e in errors)
                Console.Error.WriteLine(e);
            if (config is not null)
            {
                foreach (var (path, reason) in Cgroups.Unavailable(config.Pools.Values, Dispatch.Protocol.Hosting.CgroupHost.Detect()))
                    Console.Error.WriteLine($"{config.SourcePath}: {path}: warning: {reason}; the master will run this pool without that limit (\"cgroup\": {{ \"required\": true }} makes this an error)");
            }

            Console.WriteLine(errors.Count == 0 ? $"{config!.SourcePath}: configuration OK" : $"{errors.Count} error(s); configuration rejected");
            return errors.Count == 0 ? 0 : 1;
        }

        if (Libc.GetEUid() != 0)
        {
            Console.Error.WriteLine("Dispatch's master must run as root: it binds the ports and starts every tenant's worker under the tenant's own uid, jailed. Run it with sudo (see README).");
            return 77;
        }

        var log = CreateLogger(config?.Log);
        try
        {
            if (config is null)
            {
                foreach (var e in errors)
                    log.Fatal("Configuration error: {Error}", e.ToString());
                return 78;
            }

            var unsafePath = PathSafety.CheckRootOwned(RuntimePaths.AppDirectory) ?? PathSafety.CheckRootOwned(RuntimePaths.DotnetRoot);
            if (unsafePath is not null)
            {
                log.Fatal("Refusing to start from {AppDirectory}: {Reason}. Install the binaries in a root-owned directory no one else can write (the run script and tests publish to one).", RuntimePaths.AppDirectory, unsafePath);
                return 78;
            }

            var identities = new List<(string Who, uint Uid, uint[] Gids)> { ("dispatcher", config.Dispatcher.Uid, [config.Dispatcher.Gid]) };
            identities.AddRange(config.Pools.Values.Select(p => ($"pool '{p.Name}'", p.Uid, (uint[])[p.Gid, .. p.Groups])));
            foreach (var (who, uid, gids) in identities)
            {
                var why = PathSafety.CheckTraversable(RuntimePaths.AppDirectory, uid, gids) ?? PathSafety.CheckTraversable(RuntimePaths.DotnetRoot, uid, gids);
                if (why is not null)
                {
                    log.Fatal("Refusing to start: the {Who} could not load its binaries after dropping privileges: {Reason}", who, why);
                    return 78;
                }
            }

            Spawner.LogLevel = config.Log.Level;
            if (signals!.WereIgnored.Count > 0)
                log.Information("{Signals} were ignored when the master was started (as in a background job of a script); the master handles them", string.Join(", ", signals.WereIgnored));
            if (signals.StillIgnored.Count > 0)
                log.Error("{Signals} are still ignored: the master cannot act on them", string.Join(", ", signals.StillIgnored));
            using var master = new MasterService(config, log);
            signals.Attach(master);

            // reloadOnChange, debounced: editors and panels write in bursts (and sometimes half a file first).
            using var watcher = new FileSystemWatcher(Path.GetDirectoryName(config.SourcePath)!, Path.GetFileName(config.SourcePath))
            {
                NotifyFilter = NotifyFilters.LastWrite | NotifyFilters.FileName | NotifyFilters.Size | NotifyFilters.CreationTime,
            };
            Timer? debounce = null;
            void Changed(object? sender, FileSystemEventArgs e)
            {
                var t = new Timer(_ => _ = master.ReloadAsync("file changed"), null, Timeout.Infinite, Timeout.Infinite);
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

    /// <summary><c>status</c>, <c>reload</c>, <c>upgrade</c>: one command over the control socket.</summary>
    private static async Task<int> ControlClientAsync(string[] args)
    {
        var command = args[0];
        string? socket = null;
        string? configPath = null;
        for (var i = 1; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--json" when command == "status":
                    command = "status --json";
                    break;
                case "--socket" when i + 1 < args.Length:
                    socket = args[++i];
                    break;
                case "--config" when i + 1 < args.Length:
                    configPath = args[++i];
                    break;
                default:
                    Console.Error.WriteLine(Usage);
                    return 64;
            }
        }

        if (socket is null && configPath is not null)
        {
            try
            {
                using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(configPath), new System.Text.Json.JsonDocumentOptions { CommentHandling = System.Text.Json.JsonCommentHandling.Skip, AllowTrailingCommas = true });
                if (doc.RootElement.TryGetProperty("control", out var control) && control.TryGetProperty("socket", out var path))
                    socket = path.GetString();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
            {
                Console.Error.WriteLine($"{configPath}: {e.Message}");
                return 1;
            }
        }

        socket ??= "/run/dispatch/control.sock";
        try
        {
            var answer = await Operations.ControlServer.AskAsync(socket, command).ConfigureAwait(false);
            Console.Write(answer);
            return answer.StartsWith("refused", StringComparison.Ordinal) || answer.StartsWith("failed", StringComparison.Ordinal) || answer.StartsWith("rejected", StringComparison.Ordinal) ? 1 : 0;
        }
        catch (System.Net.Sockets.SocketException e)
        {
            Console.Error.WriteLine($"Cannot reach the master at {socket}: {e.Message} (is it running? is this root?)");
            return 1;
        }
    }

    private static Serilog.Core.Logger CreateLogger(LogConfig? config)
    {
        var level = Enum.TryParse<LogEventLevel>(config?.Level, out var l) ? l : LogEventLevel.Information;
        var lc = new LoggerConfiguration().MinimumLevel.Is(level);
        var json = new Serilog.Formatting.Json.JsonFormatter(renderMessage: true, formatProvider: System.Globalization.CultureInfo.InvariantCulture);
        lc = config?.Console switch
        {
            "none" => lc,
            "json" => lc.WriteTo.Console(json),
            _ => lc.WriteTo.Console(outputTemplate: "[{Timestamp:HH:mm:ss.fff} {Level:u3}] {Message:lj}{NewLine}{Exception}", formatProvider: System.Globalization.CultureInfo.InvariantCulture),
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
