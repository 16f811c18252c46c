using System.CommandLine;
using Dispatch.Master.Operations;

namespace Dispatch.Master;

/// <summary>
/// The command line, the same whether run as <c>Master</c> or through the installed <c>dispatch</c>
/// wrapper (which sets <c>DISPATCH_CONFIG</c> to the installed config and <c>DISPATCH_PROGRAM</c> to its
/// name): <c>run</c>, <c>check</c>, <c>status</c>, <c>reload</c>, <c>upgrade</c>, <c>reopen</c>.
/// <c>--help</c> goes to stdout (exit 0); a usage error goes to stderr (exit 64). The form before the
/// verbs, <c>Master --config FILE</c> (the systemd unit's <c>ExecStart</c>), still means <c>run</c>.
/// </summary>
internal static class Cli
{
    /// <summary>Done: the master stopped on a signal, the config is valid, the command was carried out.</summary>
    public const int ExitOk = 0;

    /// <summary><c>check</c>: the config is rejected. <c>run</c>: a dispatcher or a listener could not start.
    /// The control verbs: the master refused or failed the command, or could not be reached.</summary>
    public const int ExitFailed = 1;

    /// <summary>A usage error: unknown verb or option, missing value (EX_USAGE).</summary>
    public const int ExitUsage = 64;

    /// <summary><c>run</c>: an unexpected error stopped the master (EX_SOFTWARE).</summary>
    public const int ExitSoftware = 70;

    /// <summary><c>run</c>: not root (EX_NOPERM).</summary>
    public const int ExitNotRoot = 77;

    /// <summary><c>run</c>: the config is invalid, or the binaries are not installed safely (EX_CONFIG).</summary>
    public const int ExitConfig = 78;

    /// <summary>The config file when <c>-c</c> is not given: <c>DISPATCH_CONFIG</c> if set, else this.</summary>
    public const string DefaultConfig = "/etc/dispatch/dispatch.json";

    private const string ExitCodes = """
        Exit status:
          0   done (run: stopped by SIGTERM, SIGINT or SIGQUIT)
          1   check: the config is rejected; run: a dispatcher or listener could not start;
              status, reload, upgrade, reopen: the master refused or failed, or could not be reached
          64  usage error
          70  run: unexpected error
          77  run: not root
          78  run: invalid config, or binaries not in a root-owned directory
        """;

    /// <summary>The config file used when <c>-c</c> is not given.</summary>
    public static string ConfigDefault =>
        Environment.GetEnvironmentVariable("DISPATCH_CONFIG") is { Length: > 0 } fromWrapper ? fromWrapper : DefaultConfig;

    /// <summary>Parses and runs one command line; returns the process exit status.</summary>
    public static async Task<int> InvokeAsync(string[] args, TextWriter? stdout = null, TextWriter? stderr = null)
    {
        var (root, run) = Build();
        var parsed = root.Parse(Legacy(args));
        stdout ??= Console.Out;
        stderr ??= Console.Error;
        if (parsed.Errors.Count > 0)
        {
            foreach (var error in parsed.Errors)
                await stderr.WriteLineAsync(error.Message).ConfigureAwait(false);
            // The help of the command that was meant (the root's when the verb itself is wrong), to stderr.
            var command = parsed.CommandResult.Command;
            string[] help = command == root ? ["--help"] : [command.Name, "--help"];
            await root.Parse(help).InvokeAsync(new InvocationConfiguration { Output = stderr, Error = stderr }).ConfigureAwait(false);
            return ExitUsage;
        }

        // The master's signals are taken over before anything touches the console (see MasterSignals).
        if (parsed.CommandResult.Command == run && parsed.Action == run.Action)
            PendingSignals = MasterSignals.Install();

        // No termination handler of the parser's own: the master handles SIGTERM and SIGINT itself.
        return await parsed.InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr, ProcessTerminationTimeout = null, EnableDefaultExceptionHandler = false }).ConfigureAwait(false);
    }

    /// <summary>The commands, for <see cref="InvokeAsync"/> and the tests.</summary>
    internal static (RootCommand Root, Command Run) Build()
    {
        var name = Environment.GetEnvironmentVariable("DISPATCH_PROGRAM") is { Length: > 0 } program ? program : "Master";
        var root = new RootCommand($"""
            Dispatch: a privilege-separated HTTPS front end. The master (root) starts a jailed TLS
            dispatcher and each tenant's workers, jailed under the tenant's own uid.

              {name} run [-c FILE]              run Dispatch in the foreground (as root)
              {name} check [-c FILE]            validate the config, like nginx -t
              {name} status [--json]            the running master's pools, workers, vhosts, certificates
              {name} reload                     validate and apply the config (= SIGHUP)
              {name} upgrade                    new dispatchers, then workers, from the binaries now installed (= SIGUSR2)
              {name} reopen                     reopen the log files (= SIGUSR1)

            FILE defaults to $DISPATCH_CONFIG, else {DefaultConfig}. status, reload, upgrade and reopen talk
            to the control socket the config names (control.socket, default {Program.DefaultControlSocket}; root
            only). See docs/operations.md.

            {ExitCodes}
            """);
        root.SetAction(parsed =>
        {
            // No verb: the usage, as an error (a bare Master must not start a server by surprise).
            var stderr = parsed.InvocationConfiguration.Error;
            root.Parse(["--help"]).Invoke(new InvocationConfiguration { Output = stderr, Error = stderr });
            return ExitUsage;
        });

        var run = new Command("run", "Run Dispatch in the foreground, as root: the master, its dispatchers and workers. Stops on SIGTERM, SIGINT (graceful) or SIGQUIT (immediate).");
        var runConfig = ConfigOption();
        run.Add(runConfig);
        run.SetAction(async parsed =>
        {
            using var signals = PendingSignals ?? MasterSignals.Install();
            PendingSignals = null;
            return await Program.RunAsync(parsed.GetValue(runConfig)!, signals).ConfigureAwait(false);
        });
        root.Add(run);

        var check = new Command("check", "Validate the config exactly as run would, print every error, exit 1 if there is any (like nginx -t). Needs no root for a config whose users and files the caller can resolve.");
        var checkConfig = ConfigOption();
        check.Add(checkConfig);
        check.SetAction(parsed => Program.Check(parsed.GetValue(checkConfig)!));
        root.Add(check);

        var json = new Option<bool>("--json") { Description = "The same, as one JSON document." };
        root.Add(ControlCommand("status", "The running master's dispatchers, pools, workers, vhosts, certificates and last reload.", json));
        root.Add(ControlCommand("reload", "Validate and apply the config, as SIGHUP does, and print the result (the last good config keeps serving if it is rejected).", null));
        root.Add(ControlCommand("upgrade", "Start new dispatchers (then workers) from the binaries now installed, as SIGUSR2 does, and print the result.", null));
        root.Add(ControlCommand("reopen", "Reopen the master's log file and every access and error log (after logrotate), as SIGUSR1 does.", null));
        return (root, run);
    }

    /// <summary>Signals installed by <see cref="InvokeAsync"/> before the run action, handed to it.</summary>
    private static MasterSignals? PendingSignals { get; set; }

    /// <summary><c>Master --config FILE</c> (no verb: the unit's <c>ExecStart</c>, scripts, tests) is <c>run</c>.</summary>
    internal static string[] Legacy(string[] args) =>
        args is [var first, ..] && first.StartsWith('-') && first is not ("-h" or "--help" or "-?" or "/h" or "/?" or "--version")
            ? ["run", .. args]
            : args;

    private static Option<string> ConfigOption() => new("--config", "-c")
    {
        Description = "The config file ($DISPATCH_CONFIG when set)",
        HelpName = "FILE",
        DefaultValueFactory = _ => ConfigDefault,
    };

    private static Command ControlCommand(string name, string description, Option<bool>? json)
    {
        var command = new Command(name, description);
        var config = ConfigOption();
        config.Description = $"The config whose control.socket to use ($DISPATCH_CONFIG when set; when the default file does not exist, {Program.DefaultControlSocket})";
        var socket = new Option<string>("--socket") { Description = "The control socket, instead of the config's.", HelpName = "PATH" };
        command.Add(config);
        command.Add(socket);
        if (json is not null)
            command.Add(json);
        command.SetAction(parsed =>
        {
            var line = json is not null && parsed.GetValue(json) ? $"{name} --json" : name;
            var given = parsed.GetResult(config) is { Implicit: false };
            return Program.ControlClientAsync(line, parsed.GetValue(config)!, given, parsed.GetValue(socket));
        });
        return command;
    }
}
