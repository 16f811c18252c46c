using Dispatch.Platform.Confinement;
using Dispatch.Platform.Hosting;
using Dispatch.Platform.Interop;
using Dispatch.Wire;
using Serilog;
using Serilog.Events;

namespace Dispatch.Platform.Spawn;

/// <summary>
/// The start of every child's Main. Stage 1 (<c>--stage1</c>, root) applies the jail and re-executes;
/// stage 2 (<c>--jailed</c>) turns dumpable off again (execve resets it), says Hello on fd 3 and
/// returns the channel to the master.
/// </summary>
public static class ChildBootstrap
{
    /// <summary>When this image's Main called <see cref="Start"/> (CLOCK_MONOTONIC ms: <see cref="StartupTrace"/>).</summary>
    public static double MainEnteredMs { get; private set; }

    public static IpcChannel Start(ProcessRole role, string[] args)
    {
        MainEnteredMs = StartupTrace.NowMs;
        // The master refuses to start on another architecture than x86_64 (NativeLayout); a child checks again before
        // it reads any native struct, so that no binary of Dispatch reads one with the wrong layout, however started.
        if (NativeLayout.Unsupported() is { } unsupported)
        {
            Console.Error.WriteLine($"{role}: {unsupported}");
            Environment.Exit(69); // EX_UNAVAILABLE
        }

        if (args is ["--stage1"])
        {
            Jail.RunStage1(role); // Never returns: execs or exits.
            Environment.Exit(70);
        }

        if (args is not ["--jailed"])
        {
            Console.Error.WriteLine($"{role} is started by the Dispatch master (Master --config FILE), not by hand.");
            Environment.Exit(64);
        }

        Libc.Prctl(Libc.PR_SET_DUMPABLE, 0, 0, 0, 0);
        var channel = IpcChannel.FromDescriptor(Spawner.ChannelFd, "master");
        channel.Send(new Hello(role, Environment.ProcessId));
        return channel;
    }

    /// <summary>
    /// A child's log: compact lines on stderr, which is a socket the master reads and re-logs with
    /// the child's role and pid. The child opens no log file of its own, and no descriptor for its log
    /// (<see cref="StderrSink"/>, not the console's).
    /// </summary>
    public static Serilog.Core.Logger CreateLogger() =>
        new LoggerConfiguration()
            .MinimumLevel.Is(Enum.TryParse<LogEventLevel>(Environment.GetEnvironmentVariable(Spawner.LogLevelVariable), out var level) ? level : LogEventLevel.Information)
            .WriteTo.Sink(new StderrSink(new ChildLogFormatter()))
            .CreateLogger();
}
