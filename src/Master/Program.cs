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
        """;

    private static async Task<int> Main(string[] args)
    {
        var check = args.Length > 0 && args[0] == "check";
        var rest = check ? args[1..] : args;
        if (rest is not ["--config", var configPath])
        {
            Console.Error.WriteLine(Usage);
            return 64;
        }

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
            using var master = new MasterService(config, log);
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; master.RequestStop(); });
            using var intr = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; master.RequestStop(); });
            using var usr1 = PosixSignalRegistration.Create((PosixSignal)10 /* SIGUSR1 */, c => { c.Cancel = true; master.ReopenLogs(); });
            using var quit = PosixSignalRegistration.Create(PosixSignal.SIGQUIT, c => { c.Cancel = true; master.RequestImmediateStop(); });
            using var hup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, c => { c.Cancel = true; _ = master.ReloadAsync("SIGHUP"); });
            using var usr2 = PosixSignalRegistration.Create((PosixSignal)12 /* SIGUSR2 */, c => { c.Cancel = true; _ = master.UpgradeAsync("SIGUSR2"); });

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
            log.Information("Master {Pid} starting with {Config}: {Vhosts} vhosts in {Pools} pools", Environment.ProcessId, config.SourcePath, config.Vhosts.Count, config.Pools.Count);
            return await master.RunAsync().ConfigureAwait(false);
        }
        finally
        {
            await Log.CloseAndFlushAsync().ConfigureAwait(false);
            log.Dispose();
        }
    }

    private static Serilog.Core.Logger CreateLogger(LogConfig? config)
    {
        var level = Enum.TryParse<LogEventLevel>(config?.Level, out var l) ? l : LogEventLevel.Information;
        var lc = new LoggerConfiguration()
            .MinimumLevel.Is(level)
            .WriteTo.Console(outputTemplate: "[{Timestamp:HH:mm:ss.fff} {Level:u3}] {Message:lj}{NewLine}{Exception}", formatProvider: System.Globalization.CultureInfo.InvariantCulture);
        if (config?.File is { } file)
            lc = lc.WriteTo.File(file, formatProvider: System.Globalization.CultureInfo.InvariantCulture);
        return lc.CreateLogger();
    }
}
